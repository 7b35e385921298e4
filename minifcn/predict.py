"""``python -m minifcn.predict``: the command lives in ``minifcn/commands/predict.py``."""

from minifcn.commands.predict import main

if __name__ == "__main__":
    main()
