"""`rhythm simulate`: a seedable month of a realistic enterprise, and its sending."""
