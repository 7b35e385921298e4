"""``python -m minifcn.evaluate``: the command lives in ``minifcn/commands/evaluate.py``."""

from minifcn.commands.evaluate import main

if __name__ == "__main__":
    main()
