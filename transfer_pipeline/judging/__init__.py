"""Judging results: evaluation, accuracy intervals, comparisons, the report."""
