"""``python -m minifcn.example_data``: the command lives in ``minifcn/commands/example_data.py``."""

from minifcn.commands.example_data import main

if __name__ == "__main__":
    main()
