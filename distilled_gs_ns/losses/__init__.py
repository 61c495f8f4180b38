"""Loss terms of the methods (kept apart from the models that use them)."""
