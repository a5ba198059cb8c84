"""Benchmarks: each `*_bench.py` prints its figures and writes `bench/results/<name>.json`."""
