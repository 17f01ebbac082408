"""Health checks H1-H7: plain functions over a :class:`ProbeSession`, no Dagster.

One module per check (``h1_connection`` ... ``h7_api``), each declaring the queries it
needs (:class:`~westep_ops.probes.health.query.Query`) and judging what came back into a
:class:`CheckResult`. :mod:`.sweep` batches the declared queries into as few round trips
as possible (:mod:`.batch` runs them, one by one when a batch fails), runs the HTTP
probes and H1's pooled check in lanes of their own, then marks failures that another
failing category explains (``suspected_cause``): when pgbouncer is paused the API fails
too, but the pool is what to fix. Shared pieces: :mod:`.common`, :mod:`.locks` (tables
H3 and H4 find locked), :mod:`.pgbouncer` (the admin console H1, H2 and P1-P4 read).
"""

from __future__ import annotations

from westep_ops.probes.health.common import DB_FAILURES, reason
from westep_ops.probes.health.h1_connection import supabase_paused
from westep_ops.probes.health.h4_integrity import integrity_rule_sql
from westep_ops.probes.health.h5_realtime import NOTIFY_NOT_RUN
from westep_ops.probes.health.pgbouncer import admin_show, pool_database
from westep_ops.probes.health.sweep import attribute_causes, collect, run_health_check

__all__ = [
    "DB_FAILURES",
    "NOTIFY_NOT_RUN",
    "admin_show",
    "attribute_causes",
    "collect",
    "integrity_rule_sql",
    "pool_database",
    "reason",
    "run_health_check",
    "supabase_paused",
]
