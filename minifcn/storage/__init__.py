"""Files on disk: atomic writes and ``.npz`` archives (below everything that saves)."""
