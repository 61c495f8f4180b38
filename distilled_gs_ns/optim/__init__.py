"""Optimiser-side plumbing: Parameters whose rows or storage change during training."""
