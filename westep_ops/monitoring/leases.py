"""Leases: which fleet worker probes which target (``westep-ops monitor`` on a fleet).

Several workers pointed at the same ops PostgreSQL share the targets through two tables
(migration 10): ``westep_ops.workers`` (one row per worker: id, host, pid, its targets, a
heartbeat) and ``westep_ops.leases`` (one row per target: the worker holding it, an
epoch, an expiry).

Every :attr:`Timing.renew_s` a worker runs :meth:`Leases.rebalance`: it beats its
heartbeat, reads the live workers (heartbeat within the TTL), and decides each target's
owner by rendezvous hashing (:func:`owner`: the live worker that monitors the target with
the highest ``sha256(worker, target)``), so every worker computes the same owner without
talking to the others, and a worker joining or leaving moves only its share of targets.
Then:

- a lease this worker holds and owns is renewed (expiry = now + TTL);
- a lease it holds but no longer owns (a worker joined) is released, unless its tick is
  running (then at the next round): the owner takes it at its next round;
- a lease it owns that is free or expired is taken, with ``epoch + 1``: a kill -9'd
  worker's leases expire after at most the TTL and are taken at the owner's next round.

Right before a target's tick, :meth:`Leases.renew` extends its lease (one statement for
all the targets due at once); a target whose lease is gone is not probed. The epoch is a
fencing token: every history transaction of the target's monitor first runs
:meth:`Leases.fence` in the same transaction (the lease row ``FOR SHARE``, still this
worker's, same epoch, not expired), so a worker that was paused past its TTL and wakes up
mid-tick cannot write a sample the new owner also writes; the row lock makes a takeover
wait for a fenced write in flight, never overlap it.

Timing (:meth:`Timing.for_interval`): TTL a third of the cheap interval, within 3-30 s,
and a round every quarter TTL. A kill -9'd worker's targets are taken over at most
TTL + one round after its last renewal (25 s at the default 60 s interval), and the new
owner's monitor reads the last sample's time from the history (``Monitor.due``), so the
cadence goes on: the history's gap is at most one interval plus that.

While the ops store is unreachable, :meth:`rebalance` and :meth:`renew` raise
:class:`LeasesUnavailable`: the worker keeps probing the targets it last held (its
history spools locally) and takes nothing new. If only this worker lost the store (a
network partition) the others take its targets after the TTL, and both probe them until
it reaches the store again: it then finds them taken and lets them go.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from westep_ops.db import DeadlineExceeded, connect, deadline, describe_error
from westep_ops.store_schema import migrate

_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, DeadlineExceeded)
STATEMENT_MS = 2000
RENEW_MS = 1000  # the client deadline of a renewal (a healthy store answers in ms)


class LeasesUnavailable(Exception):
    """The ops store did not answer a lease statement (down, frozen, unreachable)."""


class LeaseLost(Exception):
    """This worker no longer holds the target's lease: its monitor must stop writing."""

    def __init__(self, target: str) -> None:
        self.target = target
        super().__init__(f"lease on target {target} lost")


def score(worker: str, target: str) -> int:
    """Rendezvous weight of ``worker`` for ``target`` (the same in every process)."""
    digest = hashlib.sha256(f"{worker}\0{target}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def owner(target: str, workers: Collection[str]) -> str | None:
    """The worker that should probe ``target``: the highest :func:`score` (ties by id)."""
    if not workers:
        return None
    return max(workers, key=lambda w: (score(w, target), w))


def default_worker_id() -> str:
    """``host:pid``: unique among the live workers of one ops store."""
    import os

    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Timing:
    ttl_s: float
    renew_s: float

    @classmethod
    def for_interval(cls, cheap_interval_ms: int) -> Timing:
        """TTL a third of the cheap interval (3-30 s), a round every quarter TTL: a dead
        worker's targets are taken over within 1.25 TTL, well under one interval."""
        ttl = min(30.0, max(3.0, cheap_interval_ms / 1000 / 3))
        return cls(ttl_s=ttl, renew_s=ttl / 4)


@dataclass
class Changes:
    """What one :meth:`Leases.rebalance` changed for this worker."""

    taken: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # taken by another worker meanwhile
    workers: int = 0  # live workers seen

    def __bool__(self) -> bool:
        return bool(self.taken or self.released or self.lost)


class Leases:
    """This worker's registration and leases. Rounds (:meth:`rebalance`,
    :meth:`release_all`) and renewals (:meth:`renew`) each have a connection of their
    own, so the worker's lease thread and its main loop never wait on each other; a
    renewal has a short deadline (:data:`RENEW_MS`): a frozen store delays a tick by that
    much at most, once (then the worker knows the store is down)."""

    def __init__(
        self,
        url: str,
        worker_id: str,
        targets: Sequence[str],
        timing: Timing,
        *,
        connect_timeout_ms: int = 2000,
    ) -> None:
        import os

        self.url, self.worker_id = url, worker_id
        self.targets = list(dict.fromkeys(targets))
        self.timing = timing
        self.connect_timeout_ms = connect_timeout_ms
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.held: dict[str, int] = {}  # target -> epoch of the lease this worker holds
        self.error: str | None = None  # why the last statement failed; None when it worked
        self._conns: dict[str, psycopg.Connection] = {}  # "round" and "renew"
        self._lock = threading.Lock()  # held is changed by both threads

    # -- the connections -------------------------------------------------------------------
    def _db(self, which: str, timeout_ms: int) -> psycopg.Connection:
        conn = self._conns.get(which)
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        conn = connect(
            self.url,
            connect_timeout_ms=min(self.connect_timeout_ms, timeout_ms),
            statement_timeout_ms=STATEMENT_MS,
            lock_timeout_ms=STATEMENT_MS // 2,
            application_name="westep-ops-leases",
        )
        try:
            with deadline(conn, STATEMENT_MS * 3):
                migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conns[which] = conn
        return conn

    def _run(
        self,
        fn: Callable[[psycopg.Connection], Any],
        which: str = "round",
        timeout_ms: int = STATEMENT_MS * 2,
    ) -> Any:
        """``fn`` in one transaction on connection ``which`` under a deadline; a store that
        does not answer is :class:`LeasesUnavailable` (and the connection is dropped)."""
        try:
            conn = self._db(which, timeout_ms)
            with deadline(conn, timeout_ms), conn.transaction():
                out = fn(conn)
        except (*_UNAVAILABLE, psycopg.errors.LockNotAvailable) as e:
            self.error = describe_error(e) or type(e).__name__
            if not isinstance(e, psycopg.errors.LockNotAvailable):
                dead = self._conns.pop(which, None)
                if dead is not None:
                    dead.close()
            raise LeasesUnavailable(self.error) from None
        self.error = None
        return out

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    # -- rounds ----------------------------------------------------------------------------
    def rebalance(self, busy: Collection[str] = ()) -> Changes:
        """Heartbeat, then release, renew and take leases as the owners say (module doc).
        A lease of a target in ``busy`` (its tick running) is renewed, not released."""
        ttl = self.timing.ttl_s
        me = self.worker_id

        def round_(conn: psycopg.Connection) -> Changes:
            conn.execute(
                "INSERT INTO westep_ops.workers (id, host, pid, targets, heartbeat_at)"
                " VALUES (%s, %s, %s, %s, clock_timestamp()) ON CONFLICT (id) DO UPDATE"
                " SET heartbeat_at = clock_timestamp(), targets = excluded.targets",
                (me, self.host, self.pid, self.targets),
            )
            conn.execute(
                "DELETE FROM westep_ops.workers WHERE heartbeat_at"
                " < clock_timestamp() - interval '1 day'"
            )
            live = conn.execute(
                "SELECT id, targets FROM westep_ops.workers WHERE heartbeat_at"
                " > clock_timestamp() - make_interval(secs => %s)",
                (ttl,),
            ).fetchall()
            conn.execute(
                "INSERT INTO westep_ops.leases (target) SELECT unnest(%s::text[])"
                " ON CONFLICT DO NOTHING",
                (self.targets,),
            )
            rows = conn.execute(
                "SELECT target, worker, epoch, expires_at > clock_timestamp()"
                " FROM westep_ops.leases WHERE target = ANY(%s)",
                (self.targets,),
            ).fetchall()
            changes = Changes(workers=len(live))
            keep, release, take = [], [], []
            for target, worker, _epoch, valid in rows:
                should = owner(target, [w for w, ts in live if target in ts]) or me
                if worker == me:
                    if should == me or target in busy:
                        keep.append(target)
                    else:
                        release.append(target)
                elif should == me and (worker is None or not valid):
                    take.append(target)
                if worker != me and target in self.held:
                    changes.lost.append(target)
                    with self._lock:
                        self.held.pop(target, None)
            if release:
                conn.execute(
                    "UPDATE westep_ops.leases SET worker = NULL, expires_at = clock_timestamp()"
                    " WHERE worker = %s AND target = ANY(%s)",
                    (me, release),
                )
                for t in release:
                    with self._lock:
                        if self.held.pop(t, None) is not None:
                            changes.released.append(t)
            if keep:
                renewed = conn.execute(
                    "UPDATE westep_ops.leases SET expires_at = clock_timestamp()"
                    " + make_interval(secs => %s) WHERE worker = %s AND target = ANY(%s)"
                    " RETURNING target, epoch",
                    (ttl, me, keep),
                ).fetchall()
                for t, epoch in renewed:
                    with self._lock:
                        if t not in self.held:
                            changes.taken.append(t)  # held before a restart with this id
                        self.held[t] = epoch
            if take:
                taken = conn.execute(
                    "UPDATE westep_ops.leases SET worker = %s, epoch = epoch + 1,"
                    " expires_at = clock_timestamp() + make_interval(secs => %s),"
                    " acquired_at = clock_timestamp()"
                    " WHERE target = ANY(%s) AND (worker IS NULL OR expires_at <= clock_timestamp())"
                    " RETURNING target, epoch",
                    (me, ttl, take),
                ).fetchall()
                for t, epoch in taken:
                    with self._lock:
                        self.held[t] = epoch
                    changes.taken.append(t)
            return changes

        changes: Changes = self._run(round_)
        return changes

    def renew(self, targets: Collection[str]) -> tuple[set[str], list[str]]:
        """Extend the leases of ``targets`` (right before their ticks): (still held, lost).
        Raises :class:`LeasesUnavailable` when the store does not answer."""
        with self._lock:
            epochs = {t: self.held[t] for t in targets if t in self.held}
        wanted = list(epochs)
        lost = [t for t in targets if t not in epochs]
        if not wanted:
            return set(), lost

        def renew_(conn: psycopg.Connection) -> set[str]:
            rows = conn.execute(
                "UPDATE westep_ops.leases l SET expires_at = clock_timestamp()"
                " + make_interval(secs => %s) FROM unnest(%s::text[], %s::bigint[]) AS w(t, e)"
                " WHERE l.target = w.t AND l.epoch = w.e AND l.worker = %s RETURNING l.target",
                (self.timing.ttl_s, wanted, [epochs[t] for t in wanted], self.worker_id),
            ).fetchall()
            return {r[0] for r in rows}

        ok: set[str] = self._run(renew_, "renew", RENEW_MS)
        for t in wanted:
            if t not in ok:
                with self._lock:
                    if self.held.get(t) == epochs[t]:  # not taken afresh meanwhile
                        del self.held[t]
                lost.append(t)
        return ok, lost

    def take_free(
        self, targets: Collection[str], ttl_s: float
    ) -> dict[str, tuple[str | None, Any]]:
        """A one-off holder (``monitor --once``): take the leases of ``targets`` that are
        free or expired, for ``ttl_s``, without registering as a worker (no worker's
        rendezvous counts it, so the workers take them back once released or expired).
        Returns the targets NOT taken: the worker holding each and its lease's expiry."""
        wanted = list(dict.fromkeys(targets))

        def take_(conn: psycopg.Connection) -> dict[str, tuple[str | None, Any]]:
            taken = {
                r[0]: int(r[1])
                for r in conn.execute(
                    "INSERT INTO westep_ops.leases AS l (target, worker, epoch, expires_at,"
                    " acquired_at) SELECT t, %s, 1, clock_timestamp() + make_interval(secs =>"
                    " %s), clock_timestamp() FROM unnest(%s::text[]) AS t"
                    " ON CONFLICT (target) DO UPDATE SET worker = EXCLUDED.worker,"
                    " epoch = l.epoch + 1, expires_at = EXCLUDED.expires_at,"
                    " acquired_at = EXCLUDED.acquired_at"
                    " WHERE l.worker IS NULL OR l.expires_at <= clock_timestamp()"
                    " RETURNING l.target, l.epoch",
                    (self.worker_id, ttl_s, wanted),
                ).fetchall()
            }
            with self._lock:
                self.held.update(taken)
            others = conn.execute(
                "SELECT target, worker, expires_at FROM westep_ops.leases WHERE target = ANY(%s)",
                ([t for t in wanted if t not in taken],),
            ).fetchall()
            return {t: (w, e) for t, w, e in others}

        out: dict[str, tuple[str | None, Any]] = self._run(take_)
        return out

    def release_all(self) -> list[str]:
        """On a clean stop: hand every lease back and leave the live workers at once, so
        the others take the targets at their next round instead of after the TTL."""

        def release_(conn: psycopg.Connection) -> list[str]:
            rows = conn.execute(
                "UPDATE westep_ops.leases SET worker = NULL, expires_at = clock_timestamp()"
                " WHERE worker = %s RETURNING target",
                (self.worker_id,),
            ).fetchall()
            conn.execute("DELETE FROM westep_ops.workers WHERE id = %s", (self.worker_id,))
            return [r[0] for r in rows]

        released: list[str] = self._run(release_)
        with self._lock:
            self.held.clear()
        return released

    def forget(self, target: str) -> None:
        """Stop fencing ``target`` in (the worker dropped it); its row is left as it is."""
        with self._lock:
            self.held.pop(target, None)

    # -- fencing -----------------------------------------------------------------------------
    def fence(self, target: str) -> Callable[[psycopg.Connection], None]:
        """The check every history transaction of ``target`` runs first (in it): the lease
        is still this worker's, same epoch, not expired; else :class:`LeaseLost`."""
        me = self.worker_id

        def check(conn: psycopg.Connection) -> None:
            epoch = self.held.get(target)
            if epoch is None:
                raise LeaseLost(target)
            row = conn.execute(
                "SELECT 1 FROM westep_ops.leases WHERE target = %s AND worker = %s"
                " AND epoch = %s AND expires_at > clock_timestamp() FOR SHARE",
                (target, me, epoch),
            ).fetchone()
            if row is None:
                raise LeaseLost(target)

        return check
