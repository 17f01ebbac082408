"""One fleet worker: ``westep-ops monitor`` probing the targets it leases, concurrently.

A :class:`Worker` holds one :class:`~westep_ops.monitoring.engine.Monitor` per target
whose lease it holds (:mod:`westep_ops.monitoring.leases`) and ticks them in a bounded
thread pool (``concurrency`` slots): a target's tick runs in one slot, so a target that
hangs or times out occupies only its own slot and never delays the others (each probe
has its own timeouts; a tick still running is simply not started again). Each monitor's
probe session keeps at most two server connections to its target: the sweep's direct
connection (kept) and its pooled one (made afresh each sweep; pgbouncer keeps the
server side idle in the target's pool).

The main loop never waits on a target or on the history: a lease thread runs a lease
round every ``renew_s`` (heartbeat, release what another worker now owns, take what
this one owns and is free or expired, renew the rest) and posts the changes; the main
loop applies them, renews the leases of the targets whose sweep is due in one statement
(a 1 s deadline: a frozen store costs that once) and hands them to the pool. Between
sweeps each held target gets a turn every :data:`POLL_S` (its Slack deliveries); a
turn that is not due probes nothing. Each target's history transactions
are fenced by its lease (:meth:`Leases.fence`): a worker whose lease was taken while
it was paused writes nothing more for that target. The sweep's cadence goes on across a
takeover: the new owner's monitor reads the last sample's time from the history.

Repairs run inline in the target's slot (``repairs="inline"``), or are queued for the
Dagster sensor (``"dagster"``: ``westep_ops.monitoring.repair_queue.enqueue``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import psycopg

from westep_ops.config import Config
from westep_ops.environment import Environment
from westep_ops.monitoring import driver
from westep_ops.monitoring.engine import Monitor, TickResult
from westep_ops.monitoring.leases import LeaseLost, Leases, LeasesUnavailable, Timing
from westep_ops.store import now_utc

DEFAULT_CONCURRENCY = 16
POLL_S = 1.0  # a held target's monitor is given a turn at least this often (Slack resends)
RETRY_S = 5.0  # after a tick failed unexpectedly
STOP_WAIT_S = 10.0  # a clean stop waits this long for running ticks before releasing
DUE_SLACK_S = 1.5  # Monitor.due's one second of slack, and a margin


class ResolvedTarget(Protocol):
    """What a worker needs of a target (``westep_ops.targets.ResolvedTarget``)."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> Config: ...
    @property
    def environment(self) -> Environment: ...


@dataclass
class Slot:
    """One held target: its monitor, its running tick, when its next sweep is due."""

    target: ResolvedTarget
    monitor: Monitor
    future: Future[None] | None = None
    poll_at: float = 0.0  # monotonic: next turn (a tick that may find nothing due)
    due_at: float = 0.0  # monotonic: next sweep due (renew the lease before that tick)
    lost: bool = False  # set by its tick when the fence said the lease is gone


def fence_history(history: Any, check: Callable[[psycopg.Connection], None]) -> None:
    """Run ``check`` first in every transaction of ``history`` (its ``tx``): the lease
    fence. The spool's replay (its own connection) is not fenced: what was spooled was
    probed under the lease."""
    inner: Callable[[], AbstractContextManager[psycopg.Connection]] = history.tx

    @contextmanager
    def tx() -> Any:
        with inner() as conn:
            check(conn)
            yield conn

    history.tx = tx


def _enqueue_repairs(monitor: Monitor, target: str, result: TickResult) -> None:
    """``--repairs dagster``: queue the tick's repair requests for the Dagster sensor (a
    store that does not answer raises: logged, and queued again at the next tick, since
    the engine asks again while the incident still calls for the repair)."""
    from westep_ops.monitoring import repair_queue

    repair_queue.enqueue(monitor.env.storage_url or "", target, list(result.repairs))


class Worker:
    """Probe the leased ones of ``targets`` until ``stop`` is set (see the module doc).

    Two threads of its own: the lease thread runs :meth:`rebalance` every ``renew_s``
    and posts what changed; the main loop (:meth:`run`) applies it (:meth:`apply`),
    renews the due targets' leases and hands their ticks to the pool. Neither waits on
    the other, nor on a target."""

    def __init__(
        self,
        targets: Sequence[ResolvedTarget],
        *,
        storage_url: str,
        worker_id: str,
        recovery: bool = True,
        repairs: str = "inline",
        concurrency: int = DEFAULT_CONCURRENCY,
        timing: Timing | None = None,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.targets = {t.name: t for t in targets}
        self.recovery, self.repairs = recovery, repairs
        self.concurrency = max(1, concurrency)
        self.echo = echo
        self.labels = len(self.targets) > 1  # one target: today's lines, no name
        cheap = min(t.config.monitoring.intervals.performance for t in targets)
        self.timing = timing or Timing.for_interval(cheap)
        self.worker_id = worker_id
        self.leases = Leases(storage_url, worker_id, list(self.targets), self.timing)
        self.slots: dict[str, Slot] = {}
        self.store_down = False  # the last lease statement found the store unreachable
        self._reached = False  # a lease round has succeeded once
        self._busy: frozenset[str] = frozenset()  # targets whose tick runs (main thread's)
        self._events: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._lock = threading.Lock()  # whole output lines

    # -- output ------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        with self._lock:
            self.echo(f"{now_utc():%H:%M:%S} {text}")

    def _say_raw(self, text: str) -> None:
        with self._lock:
            self.echo(text)

    def _label(self, name: str) -> str:
        return name if self.labels else ""

    # -- the lease thread ------------------------------------------------------------------------
    def rebalance(self) -> None:
        """One lease round (leases module doc); posts the changes for :meth:`apply`."""
        try:
            changes = self.leases.rebalance(self._busy)
        except LeasesUnavailable as e:
            if not self.store_down:
                self.store_down = True
                if not self._reached and len(self.targets) == 1:
                    # One target and a store down from the start: today's monitor, which
                    # probes and spools; the lease is taken once the store answers.
                    self._events.put(("unleased", next(iter(self.targets))))
                self._events.put(("down", str(e)))
            return
        self._reached = True
        if self.store_down:
            self.store_down = False
            self._events.put(("up", ""))
        for name in changes.lost:
            self._events.put(("lost", name))
        for name in changes.released:
            self._events.put(("released", name))
        for name in changes.taken:
            self._events.put(("taken", name))
        self._events.put(("held", ""))  # a round's end: drop any slot no longer held

    def _lease_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.rebalance()
            stop.wait(self.timing.renew_s)

    # -- the main loop --------------------------------------------------------------------------
    def apply(self) -> None:
        """Apply what the lease rounds posted: build or close monitors, say so."""
        while True:
            try:
                kind, name = self._events.get_nowait()
            except queue.Empty:
                return
            if kind == "taken":
                self._take(name)
            elif kind == "unleased":
                self._take(name, leased=False)
            elif kind == "lost":
                self._drop(name, "lost (taken by another worker)")
            elif kind == "released":
                self._drop(name, "released (another worker owns it now)")
            elif kind == "held":
                for n in [n for n in self.slots if n not in self.leases.held]:
                    if not self.store_down:
                        self._drop(n, "not held (another worker holds it)")
            elif kind == "down":
                self._say(
                    f"ops store unreachable for leases ({name}): probing the"
                    f" {len(self.slots)} targets last held (spooling), taking none"
                )
            elif kind == "up":
                self._say(f"ops store answers again: {len(self.leases.held)} leases held")

    def _take(self, name: str, *, leased: bool = True) -> None:
        t = self.targets[name]
        if name in self.slots:
            return
        monitor = driver.build(t.environment, t.config, recovery=self.recovery, target=name)
        fence_history(monitor.history, self.leases.fence(name))
        self.slots[name] = Slot(t, monitor)
        if leased:
            epoch = self.leases.held.get(name)
            self._say(f"lease taken: {name} (epoch {epoch}, worker {self.worker_id})")

    def _drop(self, name: str, why: str) -> None:
        slot = self.slots.pop(name, None)
        if slot is None:
            return
        self.leases.forget(name)
        self._say(f"lease {why}: {name}")
        if slot.future is not None and not slot.future.done():
            # Its writes are fenced from now on; close it when the tick ends.
            monitor = slot.monitor

            def close(_f: Future[None]) -> None:
                monitor.close()

            slot.future.add_done_callback(close)
        else:
            slot.monitor.close()

    def _renew(self, due: list[Slot]) -> list[Slot]:
        """Renew the leases of the targets about to be probed; those still held."""
        if self.store_down:
            return due  # the store is down: keep probing what was held (spooling)
        try:
            ok, lost = self.leases.renew([s.target.name for s in due])
        except LeasesUnavailable as e:
            self.store_down = True  # until a lease round reaches the store again
            self._events.put(("down", str(e)))
            return due
        for name in lost:
            self._drop(name, "lost (not renewed)")
        return [s for s in due if s.target.name in ok]

    def _tick(self, slot: Slot) -> None:
        m, name = slot.monitor, slot.target.name
        try:
            result = m.tick()
        except LeaseLost:
            slot.lost = True
            return
        except Exception as e:  # noqa: BLE001 - one target's bad tick must not end the rest
            driver.log_error(m, self._say_raw, f"tick of {name}", e)
            slot.poll_at = slot.due_at = time.monotonic() + RETRY_S
            return
        if result.ran:
            with self._lock:
                driver.report(m, result, self.echo, self._label(name))
            try:
                if result.repairs and self.repairs == "dagster":
                    _enqueue_repairs(m, name, result)
                else:
                    driver.run_repairs(m, result)
            except LeaseLost:
                slot.lost = True
                return
            except Exception as e:  # noqa: BLE001 - nor one bad repair
                driver.log_error(m, self._say_raw, f"repairs of {name}", e)
        now = time.monotonic()
        slot.due_at = now + m.next_due_in(m.clock())
        slot.poll_at = now + min(POLL_S, slot.due_at - now)

    def step(self, pool: ThreadPoolExecutor, now: float) -> None:
        """One pass of the main loop: apply lease changes, reap ticks, renew and start
        the due ones."""
        self.apply()
        for name, slot in list(self.slots.items()):
            if slot.future is not None and slot.future.done():
                slot.future = None
            if slot.lost and slot.future is None:
                slot.lost = False
                self._drop(name, "lost (fenced: its lease was no longer valid)")
        ready = [s for s in self.slots.values() if s.future is None and s.poll_at <= now]
        # The engine runs a sweep up to a second early: renew whatever could sweep now.
        due = [s for s in ready if s.due_at - DUE_SLACK_S <= now]
        renewed = {id(s) for s in self._renew(due)} if due else set()
        for s in ready:
            if s.target.name in self.slots and (s.due_at - DUE_SLACK_S > now or id(s) in renewed):
                s.future = pool.submit(self._tick, s)
        self._busy = frozenset(n for n, s in self.slots.items() if s.future is not None)

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``: lease rounds every ``renew_s`` (a thread), due targets' ticks
        in the pool. On the way out: running ticks get :data:`STOP_WAIT_S`, then every
        lease is handed back (the other workers take the targets at their next round)."""
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="westep-target")
        rounds = threading.Thread(
            target=self._lease_loop, args=(stop,), name="westep-leases", daemon=True
        )
        rounds.start()
        try:
            while not stop.is_set():
                self.step(pool, time.monotonic())
                stop.wait(0.1)
        finally:
            stop.set()
            deadline = time.monotonic() + STOP_WAIT_S
            for slot in list(self.slots.values()):
                if slot.future is not None:
                    try:
                        slot.future.exception(timeout=max(0.0, deadline - time.monotonic()))
                    except TimeoutError:
                        pass  # a hung tick: its writes are fenced once the lease is gone
            pool.shutdown(wait=False, cancel_futures=True)
            rounds.join(max(0.0, deadline - time.monotonic()) + 5)
            try:
                released = self.leases.release_all()
                if released:
                    self._say(f"leases released (stopping): {', '.join(sorted(released))}")
            except LeasesUnavailable:
                self._say(
                    "stopping: the ops store does not answer; the leases expire after"
                    f" {self.leases.timing.ttl_s:.0f} s"
                )
            for name in list(self.slots):
                slot = self.slots.pop(name)
                if slot.future is None or slot.future.done():
                    slot.monitor.close()
            self.leases.close()


ONCE_TTL_S = 300.0  # a one-off sweep's leases: longer than any sweep with its repairs


def once(
    targets: Sequence[ResolvedTarget],
    *,
    recovery: bool,
    repairs: str = "inline",
    concurrency: int = DEFAULT_CONCURRENCY,
    echo: Callable[[str], None] = print,
    worker_id: str = "once",
) -> list[TickResult | None]:
    """``monitor --once``: one full sweep of each target, concurrently, each under its
    lease like a worker's (taken if free or expired, fenced, handed back at the end): a
    target a running worker holds is not swept (its worker probes and stores it; two
    writers would double its samples and incidents), and says so. With the ops store
    unreachable nothing can be coordinated: every target is swept (and spooled), as a
    worker keeps probing. None for a target not swept or whose sweep raised (logged)."""
    lock = threading.Lock()

    def say(text: str) -> None:
        with lock:
            echo(text)

    with once_leases(targets, say, worker_id) as (leases, held_elsewhere):

        def one(t: ResolvedTarget) -> TickResult | None:
            if t.name in held_elsewhere:
                return None
            m = driver.build(t.environment, t.config, recovery=recovery, target=t.name)
            if leases is not None:
                fence_history(m.history, leases.fence(t.name))
            return _sweep_once(m, t.name, repairs, say, lock, echo)

        with ThreadPoolExecutor(max(1, min(concurrency, len(targets)))) as pool:
            return list(pool.map(one, targets))


def _sweep_once(
    m: Monitor,
    name: str,
    repairs: str,
    say: Callable[[str], None],
    lock: threading.Lock,
    echo: Callable[[str], None],
) -> TickResult | None:
    """One full sweep of one target, reported, its repairs run or queued; None when it
    raised (logged)."""
    try:
        result = m.tick(force="full")
        with lock:
            driver.report(m, result, echo, name)
        if result.repairs and repairs == "dagster":
            _enqueue_repairs(m, name, result)
        else:
            driver.run_repairs(m, result)
        return result
    except Exception as e:  # noqa: BLE001 - one target's failure is its own
        driver.log_error(m, say, f"sweep of {name}", e)
        return None
    finally:
        m.close()


def _wait_for_dead_holders(
    leases: Leases, held: dict[str, tuple[str | None, Any]], say: Callable[[str], None]
) -> dict[str, str | None]:
    """A lease another worker holds: a live worker keeps pushing its expiry forward (a
    round every quarter of its TTL), a dead one (kill -9) leaves it to run out. Wait for
    each held lease until it is either renewed (alive: not ours; returned with its
    holder) or expired and taken; at most the longest remaining lease (30 s at most)."""
    if not held:
        return {}
    first = {t: e for t, (_w, e) in held.items()}
    longest = max(e for e in first.values())
    say(
        f"waiting up to {max(0.0, (longest - now_utc()).total_seconds()):.0f} s for the"
        f" lease(s) of {', '.join(sorted(held))}: taken if their worker is gone"
    )
    alive: dict[str, str | None] = {}
    give_up = time.monotonic() + 35.0  # a lease lasts 30 s at most (Timing.for_interval)
    while held:
        time.sleep(0.5)
        for t, (worker, expires) in list(held.items()):
            if expires > first[t]:
                alive[t] = worker  # renewed since we looked: its worker is running
                del held[t]
        if held:
            held = leases.take_free(list(held), ONCE_TTL_S)
        if held and (now_utc() > longest + timedelta(seconds=2) or time.monotonic() > give_up):
            alive.update({t: w for t, (w, _e) in held.items()})  # a clock apart: give up
            break
    return alive


@contextmanager
def once_leases(
    targets: Sequence[ResolvedTarget], say: Callable[[str], None], worker_id: str = "once"
) -> Iterator[tuple[Leases | None, dict[str, str | None]]]:
    """The leases of a one-off sweep (``monitor --once``): those free or expired are
    taken for :data:`ONCE_TTL_S` and handed back at the end; yields the leases (None when
    the ops store does not answer: nothing to coordinate with) and the targets another
    worker holds, with their holder (each said in one line)."""
    leases: Leases | None = None
    held_elsewhere: dict[str, str | None] = {}
    url = targets[0].environment.storage_url if targets else None
    if url:
        leases = Leases(url, worker_id, [t.name for t in targets], Timing(ONCE_TTL_S, 60.0))
        try:
            held_elsewhere = _wait_for_dead_holders(
                leases, leases.take_free([t.name for t in targets], ONCE_TTL_S), say
            )
        except LeasesUnavailable as e:
            say(f"ops store unreachable for leases ({e}): sweeping every target (spooling)")
            leases.close()
            leases = None
    for name, holder in held_elsewhere.items():
        say(
            f"{name}: not swept: its lease is held by worker {holder}, which probes and"
            f" stores it (health-check --target {name} probes without storing)"
        )
    try:
        yield leases, held_elsewhere
    finally:
        if leases is not None:
            try:
                leases.release_all()
            except LeasesUnavailable:
                pass  # they expire after ONCE_TTL_S
            leases.close()
