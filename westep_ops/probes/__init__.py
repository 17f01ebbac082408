"""Probes: plain functions that measure the monitored stack. No Dagster in here."""
