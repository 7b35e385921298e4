"""The commands: each module is argparse + ``main`` over library calls.

They are the top layer: nothing in the library imports them. Run one as
``python -m minifcn.<command>`` or ``minifcn <command>``.
"""
