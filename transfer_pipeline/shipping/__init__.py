"""Shipping a trained model: export formats, their runtimes, predicting."""
