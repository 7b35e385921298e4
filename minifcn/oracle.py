"""``python -m minifcn.oracle``: the command lives in ``minifcn/commands/oracle.py``."""

from minifcn.commands.oracle import main

if __name__ == "__main__":
    main()
