"""Distilled-3DGS: teacher loading, fused pseudo-labels, Gaussian importance and the student budget."""
