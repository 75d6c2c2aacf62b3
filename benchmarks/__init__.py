"""Benchmarks of the project's trainer and evaluator against standard references (see bench.py)."""
