"""``python -m minifcn.export``: the command lives in ``minifcn/commands/export.py``."""

from minifcn.commands.export import main

main()
