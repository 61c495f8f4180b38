"""Training-time regularisers that make the Distilled-3DGS teachers differ from a plain 3DGS."""
