"""`python -m rhythm.stack.cli`: the same as the `rhythm` console script."""

from rhythm.stack.cli.main import main

main()
