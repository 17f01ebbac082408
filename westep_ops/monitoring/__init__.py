"""Continuous monitoring (M1-M4): history, alerting with hysteresis, auto-recovery triggers.

Plain code: the standalone ``westep-ops monitor`` driver and the Dagster sensor both call
:class:`~westep_ops.monitoring.engine.Monitor`.
"""
