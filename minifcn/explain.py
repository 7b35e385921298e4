"""``python -m minifcn.explain``: the command lives in ``minifcn/commands/explain.py``."""

from minifcn.commands.explain import main

if __name__ == "__main__":
    main()
