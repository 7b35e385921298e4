"""``python -m minifcn.gpucheck``: the command lives in ``minifcn/commands/gpucheck.py``."""

from minifcn.commands.gpucheck import main

if __name__ == "__main__":
    main()
