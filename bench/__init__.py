"""Benchmarks for the case study service; run ``bench/run.sh`` or ``python -m bench``."""
