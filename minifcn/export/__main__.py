"""``python -m minifcn.export``: see ``minifcn/export/cli.py``."""

from .cli import main

main()
