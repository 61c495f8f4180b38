"""Scaffold-GS, the representation Momentum-GS trains: anchors, their shared decoder and its
momentum teacher, anchor growing and pruning, and baking anchors into explicit Gaussians for export."""
