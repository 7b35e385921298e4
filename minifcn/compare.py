"""``python -m minifcn.compare``: the command lives in ``minifcn/commands/compare.py``."""

from minifcn.commands.compare import main

if __name__ == "__main__":
    main()
