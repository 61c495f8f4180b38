"""Compatibility shims for the library versions nerfstudio 1.1.5 did not anticipate."""
