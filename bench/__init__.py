"""Benchmarks of feedsvc: run with python -m bench."""
