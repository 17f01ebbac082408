"""Repairs a worker asks Dagster to run: a queue in the ops PostgreSQL.

A worker started with ``westep-ops monitor --repairs dagster`` does not repair: each tick
it queues the engine's :class:`~westep_ops.monitoring.observation.RepairRequest`\\ s here
(:func:`enqueue`), and the Dagster monitoring sensor turns each queued request into one
``repair_job`` run for its target (:func:`pending`, then :func:`mark_launched` once the
run exists). The run key (incident + action + attempts already on record) is unique in
the table, so a request the level-triggered engine repeats every tick is queued once,
and Dagster's own run-key deduplication makes it one run even if the sensor yields it
twice before it sees the run.

Every call opens one connection with a connect and a statement timeout, so neither a
worker's tick nor a sensor evaluation waits on a slow ops store longer than that.
Plain module: no Dagster import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from westep_ops.db import connect, dict_rows
from westep_ops.monitoring.observation import RepairRequest
from westep_ops.store_schema import migrate

# A request no sensor launched within this long is left alone (the incident has moved on:
# the worker queues a fresh one, with a new key, if the repair is still called for).
MAX_AGE_S = 900


@dataclass(frozen=True)
class QueuedRepair:
    """One queued request, as the sensor reads it."""

    run_key: str
    target: str
    incident_id: int
    category: str
    action: str
    attempt: int
    requested_at: datetime


def _connect(url: str, timeout_ms: int) -> psycopg.Connection:
    conn = connect(url, connect_timeout_ms=timeout_ms, statement_timeout_ms=timeout_ms)
    try:
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def enqueue(
    url: str, target: str, requests: Sequence[RepairRequest], *, timeout_ms: int = 3000
) -> int:
    """Queue ``requests`` of ``target``; how many were new (a known run key is skipped).

    Raises psycopg errors (the store is down, a timeout): the caller decides (the worker
    logs it and queues again next tick, since the engine asks again while the incident
    still calls for the repair).
    """
    if not requests:
        return 0
    conn = _connect(url, timeout_ms)
    try:
        added = 0
        with conn.transaction(), conn.cursor() as cur:
            for r in requests:
                cur.execute(
                    "INSERT INTO westep_ops.repair_requests"
                    " (run_key, target, incident_id, category, action, attempt)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (run_key) DO NOTHING",
                    (r.key, target, r.incident_id, r.category, r.action.value, r.attempt),
                )
                added += cur.rowcount
        return added
    finally:
        conn.close()


def pending(
    url: str, *, limit: int = 100, max_age_s: int = MAX_AGE_S, timeout_ms: int = 3000
) -> list[QueuedRepair]:
    """Requests not launched yet and younger than ``max_age_s``, oldest first."""
    conn = _connect(url, timeout_ms)
    try:
        rows = dict_rows(
            conn,
            "SELECT run_key, target, incident_id, category, action, attempt, requested_at"
            " FROM westep_ops.repair_requests WHERE launched_at IS NULL"
            " AND requested_at > now() - make_interval(secs => %s) ORDER BY id LIMIT %s",
            (max_age_s, limit),
        )
        return [QueuedRepair(**r) for r in rows]
    finally:
        conn.close()


def mark_launched(url: str, run_key: str, run_id: str, *, timeout_ms: int = 3000) -> bool:
    """Record that ``run_key``'s run exists (``run_id``); False if it was already marked."""
    conn = _connect(url, timeout_ms)
    try:
        cur = conn.execute(
            "UPDATE westep_ops.repair_requests SET launched_at = now(), run_id = %s"
            " WHERE run_key = %s AND launched_at IS NULL",
            (run_id, run_key),
        )
        return cur.rowcount == 1
    finally:
        conn.close()
