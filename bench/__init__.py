"""Benchmarks: each prints its figures, the baseline measured in the same run, and the ratio."""
