"""The benchmark harness and its benchmarks: ``python -m benchmarks run --suite quick|full``."""
