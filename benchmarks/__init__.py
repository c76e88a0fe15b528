"""Benchmarks: each module prints figures and ratios measured side by side in one run.

``python -m benchmarks`` (or ``./dev bench``) runs them all; ``python -m benchmarks NAME``
runs ``bench_NAME.py`` only. Timings are never asserted in tests.
"""
