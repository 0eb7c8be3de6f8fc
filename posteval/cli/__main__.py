"""``python -m posteval.cli``: the same command as the ``posteval`` console script."""

from posteval.cli import main

main()
