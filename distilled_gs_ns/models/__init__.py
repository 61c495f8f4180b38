"""Splat models: the shared base and the Distilled-3DGS teachers."""
