"""Benchmarks: they print numbers and compare with a baseline measured in the same run."""
