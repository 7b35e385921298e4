"""``python -m minifcn <command>``: the same as the ``minifcn`` console script."""

from minifcn.commands import main

main()
