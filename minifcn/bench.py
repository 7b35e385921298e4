"""``python -m minifcn.bench``: the command lives in ``minifcn/commands/bench.py``."""

from minifcn.commands.bench import main

if __name__ == "__main__":
    main()
