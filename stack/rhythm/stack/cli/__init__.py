"""The `rhythm` command line: `main` assembles it, one module per group of commands."""
