"""Pipelines: how models meet data (and, for the student, its teachers)."""
