"""Rendezvous assignment of targets to fleet workers, and the lease timing (pure)."""

from __future__ import annotations

from collections import Counter

from westep_ops.monitoring.leases import Timing, owner, score

TARGETS = [f"t{i}" for i in range(1, 201)]


def test_every_worker_computes_the_same_owner_whatever_the_order() -> None:
    workers = ["a:1", "b:2", "c:3"]
    for t in TARGETS:
        assert owner(t, workers) == owner(t, list(reversed(workers))) == owner(t, set(workers))
    assert owner("t1", []) is None
    assert owner("t1", ["only"]) == "only"


def test_targets_spread_over_the_workers() -> None:
    counts = Counter(owner(t, ["a:1", "b:2"]) for t in TARGETS)
    assert set(counts) == {"a:1", "b:2"}
    assert all(60 <= n <= 140 for n in counts.values()), counts  # 200 targets, 2 workers


def test_a_joining_worker_moves_only_its_share() -> None:
    before = {t: owner(t, ["a:1", "b:2"]) for t in TARGETS}
    after = {t: owner(t, ["a:1", "b:2", "c:3"]) for t in TARGETS}
    moved = [t for t in TARGETS if before[t] != after[t]]
    assert moved and all(after[t] == "c:3" for t in moved)  # nothing moves between a and b
    assert 30 <= len(moved) <= 110, len(moved)


def test_a_leaving_worker_hands_only_its_own_targets() -> None:
    before = {t: owner(t, ["a:1", "b:2", "c:3"]) for t in TARGETS}
    after = {t: owner(t, ["a:1", "b:2"]) for t in TARGETS}
    assert all(before[t] == after[t] for t in TARGETS if before[t] != "c:3")


def test_score_is_stable_across_processes() -> None:
    # sha256-based, never Python's salted hash(): another process computes the same.
    assert score("host:1", "prod") == score("host:1", "prod")
    assert score("host:1", "prod") != score("host:1", "staging")
    assert score("w", "t") == int.from_bytes(
        __import__("hashlib").sha256(b"w\0t").digest()[:8], "big"
    )


def test_takeover_timing_fits_well_under_two_intervals() -> None:
    t = Timing.for_interval(60_000)  # the default cheap interval
    assert (t.ttl_s, t.renew_s) == (20.0, 5.0)
    # a dead worker's targets are taken at most TTL + one round after its last renewal
    assert t.ttl_s + t.renew_s < 60
    assert Timing.for_interval(3_600_000).ttl_s == 30.0
    short = Timing.for_interval(6_000)
    assert short.ttl_s == 3.0 and short.renew_s == 0.75


def test_sandbox_connection_limits_fit_a_fleet() -> None:
    from westep_ops.sandbox.manager import (
        bouncer_max_clients,
        monitor_connection_limit,
        target_max_connections,
    )

    # One target: the sandbox's historic figures (tests rely on them).
    assert (monitor_connection_limit(1), target_max_connections(1)) == (6, 40)
    assert bouncer_max_clients(1) == 200
    for n in (2, 5, 50, 200):
        # two server connections per target, with slack for a takeover's overlap
        assert monitor_connection_limit(n) >= 2 * n + 4
        # the monitor's own connections never reach H2's 80% connectionUsage warning
        assert (2 * n + 35) / (target_max_connections(n) - 3) <= 0.65
        # a pooled client and an admin console per target on pgbouncer
        assert bouncer_max_clients(n) >= 2 * n + 100
