"""Repairs R1-R6 (+ realtime) and automatic recovery. Plain code, no Dagster inside."""
