"""Densification strategies (gsplat-style): how a splat grows and shrinks towards its Gaussian count."""
