"""`rhythm report`: the queries, the report as data, and its terminal and HTML renderings."""
