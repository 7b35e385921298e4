"""Inference and scoring: predicting labels (whole or tiled), the confusion-matrix metrics."""
