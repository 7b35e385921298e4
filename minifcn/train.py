"""``python -m minifcn.train``: the command lives in ``minifcn/commands/train.py``."""

from minifcn.commands.train import main

if __name__ == "__main__":
    main()
