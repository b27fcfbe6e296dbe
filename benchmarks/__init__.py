"""Benchmarks of pkce_middleware; run them as modules from the repository root (see README.md)."""
