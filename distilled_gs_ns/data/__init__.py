"""Data shipped with the package."""

from pathlib import Path

DEMO_SCENE = Path(__file__).parent / "demo_lego"
"""Downscaled NeRF-synthetic lego (100x100 RGBA, 87 train / 13 held-out views), nerfstudio format.

See `demo_lego/ATTRIBUTION.txt`: the Lego model is by Heinzelnisse, CC-BY 3.0.
"""
