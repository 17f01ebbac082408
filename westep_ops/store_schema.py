"""The ops store's schema: ``westep_ops`` and its numbered migrations, applied once each
under one advisory lock (``westep_ops.schema_version`` records which ran).

A migration is appended, never edited: a store created by an older release is upgraded
by running the ones it lacks, in order. ``store.py`` uses ``migrate`` on its connections.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

SCHEMA = "westep_ops"
MIGRATIONS: list[str] = [
    # 1: repair attempts (append-only audit; the rate limit counts these)
    """
    CREATE TABLE IF NOT EXISTS westep_ops.repair_attempts (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        action      text NOT NULL,
        trigger     text NOT NULL,
        target      text NOT NULL,
        started_at  timestamptz NOT NULL,
        finished_at timestamptz NOT NULL,
        dry_run     boolean NOT NULL,
        forced      boolean NOT NULL DEFAULT false,
        outcome     text NOT NULL,
        summary     text NOT NULL,
        changes     jsonb NOT NULL DEFAULT '[]',
        before      jsonb,
        after       jsonb,
        escalation  smallint
    );
    CREATE INDEX IF NOT EXISTS repair_attempts_action_time
        ON westep_ops.repair_attempts (action, started_at);
    """,
    # 2: monitoring history: samples, performance samples, incidents, alerts
    """
    CREATE TABLE westep_ops.samples (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        ts          timestamptz NOT NULL,
        kind        text NOT NULL,          -- cheap | full | confirmation | verification
        category    text NOT NULL,
        status      text NOT NULL,
        summary     text NOT NULL,
        findings    text[] NOT NULL DEFAULT '{}',
        suspected_cause text,
        duration_ms real,
        value       jsonb
    );
    CREATE INDEX samples_ts ON westep_ops.samples (ts);
    CREATE INDEX samples_category_ts ON westep_ops.samples (category, ts);
    CREATE TABLE westep_ops.performance_samples (
        id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        ts               timestamptz NOT NULL,
        mean_api_ms      real,
        db_round_trip_ms real,
        http_requests    int NOT NULL,
        http_failures    int NOT NULL,
        tps              real,
        rollback_ratio   real,
        monitor_rss_mb   real,
        postgres_pss_mb  real,
        status           text NOT NULL,
        problems         text[] NOT NULL DEFAULT '{}'
    );
    CREATE INDEX performance_samples_ts ON westep_ops.performance_samples (ts);
    CREATE TABLE westep_ops.incidents (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        category      text NOT NULL,
        severity      text NOT NULL,
        started_at    timestamptz NOT NULL,  -- first failing sample
        detected_at   timestamptz NOT NULL,  -- confirmed: the alert went out
        resolved_at   timestamptz,           -- first sample of the passing streak that closed it
        closed_at     timestamptz,           -- when the streak was long enough
        recovered_by  text,                  -- auto:<action> | null (recovered by itself or by a person)
        escalation    smallint,
        summary       text NOT NULL,
        last_notified_at timestamptz
    );
    CREATE UNIQUE INDEX incidents_one_open ON westep_ops.incidents (category) WHERE closed_at IS NULL;
    CREATE INDEX incidents_started ON westep_ops.incidents (started_at);
    CREATE TABLE westep_ops.alerts (
        id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        incident_id     bigint REFERENCES westep_ops.incidents (id),
        ts              timestamptz NOT NULL,
        kind            text NOT NULL,       -- opened | reminder | escalated | resolved | summary
        severity        text NOT NULL,
        category        text NOT NULL,
        message         text NOT NULL,
        channels        text[] NOT NULL DEFAULT '{}',
        acknowledged_at timestamptz,
        acknowledged_by text,
        label           boolean,             -- true: a real problem; false: a false alarm
        labeled_at      timestamptz
    );
    CREATE INDEX alerts_ts ON westep_ops.alerts (ts);
    ALTER TABLE westep_ops.repair_attempts ADD COLUMN incident_id bigint;
    """,
    # 3: daily rollups written by the daily-partitioned assets (recomputed by backfills)
    """
    CREATE TABLE westep_ops.daily_health (
        day date NOT NULL, category text NOT NULL, samples int NOT NULL, ok int NOT NULL,
        warning int NOT NULL, critical int NOT NULL, error int NOT NULL, availability real,
        PRIMARY KEY (day, category)
    );
    CREATE TABLE westep_ops.hourly_performance (
        hour timestamptz PRIMARY KEY, samples int NOT NULL, mean_api_ms real, p95_api_ms real,
        error_rate real, mean_tps real, max_monitor_rss_mb real, max_postgres_pss_mb real
    );
    """,
    # 4: fault drill ground truth
    """
    CREATE TABLE westep_ops.drill_faults (
        id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        drill        text NOT NULL,
        fault        text NOT NULL,
        injected_at  timestamptz NOT NULL,
        removed_at   timestamptz,
        detected_at  timestamptz,
        recovered_at timestamptz,
        incident_id  bigint,
        outcome      text,
        rows_lost    bigint
    );
    """,
    # 5: history writes replayed from a monitor's local spool (exactly once per entry)
    """
    CREATE TABLE westep_ops.spool_applied (
        source     text NOT NULL,
        seq        bigint NOT NULL,
        real_id    bigint,
        applied_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (source, seq)
    );
    """,
    # 6: silences; incidents and alerts remember a silence; attempts recorded when they start
    """
    CREATE TABLE westep_ops.silences (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        categories  text[] NOT NULL,
        starts_at   timestamptz NOT NULL,
        ends_at     timestamptz NOT NULL,
        reason      text NOT NULL,
        created_by  text NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now(),
        expired_at  timestamptz,
        uid         text UNIQUE              -- written once, also when replayed from the local file
    );
    CREATE INDEX silences_ends ON westep_ops.silences (ends_at);
    ALTER TABLE westep_ops.incidents ADD COLUMN silenced_by text;       -- kept: it was silenced
    ALTER TABLE westep_ops.incidents ADD COLUMN unsilenced_at timestamptz; -- judged afresh after
    ALTER TABLE westep_ops.alerts ADD COLUMN suppressed_by text;        -- recorded, not sent
    ALTER TABLE westep_ops.repair_attempts ALTER COLUMN finished_at DROP NOT NULL;
    ALTER TABLE westep_ops.repair_attempts ADD COLUMN attempt_uid text;
    CREATE UNIQUE INDEX repair_attempts_uid ON westep_ops.repair_attempts (attempt_uid);
    """,
    # 7: drill ground truth says what each fault may break (its own category first; '{}'
    # for the drill's quiet windows, fault = 'quiet'), and the rows a repair quarantined
    """
    ALTER TABLE westep_ops.drill_faults ADD COLUMN categories text[];
    ALTER TABLE westep_ops.drill_faults ADD COLUMN rows_quarantined bigint;
    """,
    # 8: a fleet (issue 14): every row belongs to a target (config ``targets``; the rows
    # written before are the one target ``default``). No default is left behind: a write
    # that forgets its target fails instead of landing in another target's history. The
    # repair audit's host:port/db column, which was called target, becomes ``database``.
    """
    ALTER TABLE westep_ops.repair_attempts RENAME COLUMN target TO database;
    ALTER TABLE westep_ops.repair_attempts ADD COLUMN target text NOT NULL DEFAULT 'default';
    ALTER TABLE westep_ops.samples ADD COLUMN target text NOT NULL DEFAULT 'default';
    ALTER TABLE westep_ops.performance_samples ADD COLUMN target text NOT NULL DEFAULT 'default';
    ALTER TABLE westep_ops.incidents ADD COLUMN target text NOT NULL DEFAULT 'default';
    ALTER TABLE westep_ops.alerts ADD COLUMN target text NOT NULL DEFAULT 'default';
    ALTER TABLE westep_ops.drill_faults ADD COLUMN target text NOT NULL DEFAULT 'default';
    ALTER TABLE westep_ops.silences ADD COLUMN target text NOT NULL DEFAULT 'default';
    ALTER TABLE westep_ops.daily_health ADD COLUMN target text NOT NULL DEFAULT 'default';
    ALTER TABLE westep_ops.hourly_performance ADD COLUMN target text NOT NULL DEFAULT 'default';
    ALTER TABLE westep_ops.repair_attempts ALTER COLUMN target DROP DEFAULT;
    ALTER TABLE westep_ops.samples ALTER COLUMN target DROP DEFAULT;
    ALTER TABLE westep_ops.performance_samples ALTER COLUMN target DROP DEFAULT;
    ALTER TABLE westep_ops.incidents ALTER COLUMN target DROP DEFAULT;
    ALTER TABLE westep_ops.alerts ALTER COLUMN target DROP DEFAULT;
    ALTER TABLE westep_ops.drill_faults ALTER COLUMN target DROP DEFAULT;
    ALTER TABLE westep_ops.silences ALTER COLUMN target DROP DEFAULT;
    ALTER TABLE westep_ops.daily_health ALTER COLUMN target DROP DEFAULT;
    ALTER TABLE westep_ops.hourly_performance ALTER COLUMN target DROP DEFAULT;
    ALTER TABLE westep_ops.daily_health DROP CONSTRAINT daily_health_pkey;
    ALTER TABLE westep_ops.daily_health ADD PRIMARY KEY (target, day, category);
    ALTER TABLE westep_ops.hourly_performance DROP CONSTRAINT hourly_performance_pkey;
    ALTER TABLE westep_ops.hourly_performance ADD PRIMARY KEY (target, hour);
    DROP INDEX westep_ops.incidents_one_open;
    CREATE UNIQUE INDEX incidents_one_open ON westep_ops.incidents (target, category)
        WHERE closed_at IS NULL;
    DROP INDEX westep_ops.samples_category_ts;
    CREATE INDEX samples_target_category_ts ON westep_ops.samples (target, category, ts);
    CREATE INDEX samples_target_ts ON westep_ops.samples (target, ts);
    CREATE INDEX performance_samples_target_ts ON westep_ops.performance_samples (target, ts);
    CREATE INDEX incidents_target_started ON westep_ops.incidents (target, started_at);
    CREATE INDEX alerts_target_ts ON westep_ops.alerts (target, ts);
    CREATE INDEX repair_attempts_target_action_time
        ON westep_ops.repair_attempts (target, action, started_at);
    """,
    # 9: repairs a worker asks the Dagster sensor to launch (``monitor --repairs dagster``):
    # one row per run key (incident + action + attempts on record), launched exactly once
    """
    CREATE TABLE westep_ops.repair_requests (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_key       text NOT NULL UNIQUE,
        target        text NOT NULL,
        incident_id   bigint NOT NULL,
        category      text NOT NULL,
        action        text NOT NULL,
        attempt       int NOT NULL,
        requested_at  timestamptz NOT NULL DEFAULT now(),
        launched_at   timestamptz,
        run_id        text
    );
    CREATE INDEX repair_requests_pending ON westep_ops.repair_requests (id)
        WHERE launched_at IS NULL;
    """,
    # 10: fleet workers and their leases (monitoring/leases.py): a worker probes a target
    # only while it holds the target's lease; epoch is the fencing token (+1 whenever a
    # different worker takes the lease), expires_at the end of the lease unless renewed
    """
    CREATE TABLE westep_ops.workers (
        id           text PRIMARY KEY,
        host         text NOT NULL,
        pid          int NOT NULL,
        targets      text[] NOT NULL DEFAULT '{}',  -- what it monitors (its --target/--tag)
        started_at   timestamptz NOT NULL DEFAULT now(),
        heartbeat_at timestamptz NOT NULL
    );
    CREATE TABLE westep_ops.leases (
        target      text PRIMARY KEY,
        worker      text,                   -- null: free
        epoch       bigint NOT NULL DEFAULT 0,
        expires_at  timestamptz NOT NULL DEFAULT '-infinity',
        acquired_at timestamptz
    );
    """,
]


def migrate(conn: psycopg.Connection) -> None:
    """Create or upgrade the ``westep_ops`` schema (idempotent; one lock across processes)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('westep_ops.migrate'))")
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS westep_ops.schema_version (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM westep_ops.schema_version")}
        for version, ddl in enumerate(MIGRATIONS, start=1):
            if version not in done:
                conn.execute(ddl)  # our own fixed DDL
                conn.execute(
                    "INSERT INTO westep_ops.schema_version (version) VALUES (%s)", (version,)
                )
