"""Method configurations (what `ns-train <method>` runs)."""
