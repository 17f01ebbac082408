"""Dagster wiring, one folder per domain. Thin: the work lives in probes/ and repairs/."""
