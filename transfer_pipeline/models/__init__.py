"""Backbones and heads: building, loading, saving and cutting models."""
