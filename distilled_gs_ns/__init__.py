"""distilled-gs-ns: nerfstudio methods for compact (Distilled-3DGS) and large-scene (Momentum-GS) splats."""

__version__ = "0.1.0"
