"""Analyses of a network: its geometry layer by layer, and the oracle of its output grid."""
