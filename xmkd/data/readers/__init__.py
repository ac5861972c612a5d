"""Annotation and split-file readers: one module per family of formats."""
