"""Training: the loop below the ``train`` command, the run folder and its plots."""
