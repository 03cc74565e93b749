"""`rhythm up|down|status` and what runs under it: the detached supervisor, processor workers,
and `rhythm sync`'s wait for the pipeline."""
