"""Speed and quality benchmarks, each run as a module (`python -m benchmarks.<name>`); figures in RESULTS.md."""
