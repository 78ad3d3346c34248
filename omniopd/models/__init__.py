"""Model loading and the tiny offline models used by tests, benchmarks and the demo."""
