"""Benchmarks: each measures stepledger against a baseline run side by side in the same run."""
