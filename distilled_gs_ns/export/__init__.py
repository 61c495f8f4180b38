"""Splat files other tools open: nerfstudio's PLY, Niantic's SPZ and PlayCanvas' compressed PLY."""
