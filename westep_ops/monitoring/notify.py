"""Where alerts go: a log line, a JSON event, and Slack.

- ``logs/monitoring-alerts-YYYY-MM-DD.log``: one line per alert;
- ``logs/monitoring-events-YYYY-MM-DD.json``: JSON Lines, one event per line, for jq:
  ``jq -c 'select(.severity == "error" or .severity == "critical")' logs/monitoring-events-$(date +%F).json``;
- Slack incoming webhook (``WEBHOOK_URL``, ``ALERT_CHANNEL``): httpx with short timeouts,
  retries and backoff (tenacity); a failing webhook is logged, never raised, and its URL
  (the secret) never printed.

The log line and the JSON event are written at once. With ``background=True`` (what the
monitor uses) Slack is sent by one worker thread, so a webhook that never answers holds
up neither probing nor repairs; :meth:`Notifier.delivered` hands back what got through,
and an alert the webhook refused after its attempts is kept (bounded) and queued again by
:meth:`Notifier.retry_failed`, so the monitor records per-channel delivery and resends
what is missing on the next tick.

Dates are in the configured time zone, as the seed's team reads its logs in Tokyo time.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from tenacity import (
    RetryError,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from westep_ops.config import DEFAULT_TARGET
from westep_ops.environment import Environment
from westep_ops.redact import redact, redact_tree
from westep_ops.store import log_dir


@dataclass
class Alert:
    ts: datetime
    kind: str  # opened | reminder | escalated | resolved | summary
    severity: str  # critical | warning | info
    category: str
    message: str
    incident_id: int | None = None
    alert_id: int | None = None
    target: str = DEFAULT_TARGET

    def where(self) -> str:
        """``[category]``, after the target's name in a fleet (``staging [pool]``)."""
        return ("" if self.target == DEFAULT_TARGET else f"{self.target} ") + f"[{self.category}]"

    def line(self, tz: ZoneInfo) -> str:
        """One log line (a message of several lines, like the daily summary, is joined)."""
        ref = f" incident #{_ref(self.incident_id)}" if self.incident_id else ""
        hint = self.label_hint()
        return (
            f"{self.ts.astimezone(tz).isoformat(timespec='seconds')} {self.severity.upper()}"
            f" {self.where()}{ref} {self.kind} (alert {_ref(self.alert_id)}):"
            f" {' / '.join(redact(self.message).splitlines())}" + (f" | {hint}" if hint else "")
        )

    def label_hint(self) -> str | None:
        """How a person says whether this opened alert was real: the exact command (alert
        precision counts opened alerts only, so other kinds carry none). An alert raised
        while the ops store was down has a local id the command cannot take yet."""
        if self.kind != "opened" or self.alert_id is None:
            return None
        if self.alert_id < 0:
            return f"label it once the ops store has it: {UNLABELLED_COMMAND}"
        return f"label it: {label_command(self.alert_id)}"


UNLABELLED_COMMAND = "westep-ops alerts list --unlabelled"


def label_command(alert_id: int | str) -> str:
    """The command that labels opened alert ``alert_id``, as people are shown it."""
    return f"westep-ops alerts label {alert_id} --real|--false-alarm"


def _ref(value: int | None) -> str:
    """An id; a negative one is local (raised while the history was down, not replayed yet)."""
    return f"L{-value}" if value is not None and value < 0 else str(value)


def _slack_hint(a: Alert) -> str | None:
    """The label hint with its command in code style, so it is copied whole."""
    hint = a.label_hint()
    if hint is None:
        return None
    head, _, command = hint.rpartition(": ")
    return f"{head}: `{command}`"


class _Retryable(Exception):
    pass


class Notifier:
    MAX_FAILED = 50  # alerts kept for a later resend when Slack keeps failing

    def __init__(
        self,
        env: Environment,
        tz: str,
        *,
        timeout_s: float = 5.0,
        background: bool = False,
        target: str = DEFAULT_TARGET,
    ) -> None:
        self.env = env
        self.target = target  # every event it writes names it
        self.tz = ZoneInfo(tz)
        self.timeout_s = timeout_s
        self.background = background
        self.failures: list[str] = []
        self._lock = threading.RLock()
        self._queue: queue.Queue[Alert] = queue.Queue()
        self._inflight: set[int | None] = set()
        self._delivered: list[tuple[int, str]] = []
        self._failed: dict[int | None, Alert] = {}
        self._worker: threading.Thread | None = None

    def _day(self, ts: datetime) -> str:
        return ts.astimezone(self.tz).strftime("%Y-%m-%d")

    def event(self, ts: datetime, **fields: Any) -> None:
        """Append one JSON event (redacted, with its target) to the day's event file."""
        record = {
            "ts": ts.astimezone(self.tz).isoformat(timespec="seconds"),
            "target": self.target,
            **fields,
        }
        path = log_dir() / f"monitoring-events-{self._day(ts)}.json"
        line = json.dumps(redact_tree(record), ensure_ascii=False) + "\n"
        with self._lock, open(path, "a", encoding="utf-8") as f:
            f.write(line)

    def alert(self, a: Alert) -> list[str]:
        """Send ``a`` everywhere it should go; returns the channels that took it."""
        channels = []
        path: Path = log_dir() / f"monitoring-alerts-{self._day(a.ts)}.log"
        with self._lock, open(path, "a", encoding="utf-8") as f:
            f.write(a.line(self.tz) + "\n")
        channels.append("log")
        self.event(
            a.ts,
            type="alert",
            kind=a.kind,
            severity=a.severity,
            category=a.category,
            message=redact(a.message),
            incident=a.incident_id,
            alert=a.alert_id,
        )
        channels.append("events")
        if self.env.webhook_url:
            if self.background:
                self.send(a)
            elif self._slack(a):
                channels.append("slack")
        return channels

    # -- background delivery ----------------------------------------------------------------
    def send(self, a: Alert) -> bool:
        """Queue ``a`` for Slack unless it is already queued; False when it was."""
        if not self.env.webhook_url:
            return False
        with self._lock:
            if a.alert_id in self._inflight:
                return False
            self._inflight.add(a.alert_id)
            self._failed.pop(a.alert_id, None)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="westep-slack", daemon=True)
                self._worker.start()
        self._queue.put(a)
        return True

    def _work(self) -> None:
        while True:
            a = self._queue.get()
            ok = False
            try:
                ok = self._slack(a)
            except Exception as e:  # noqa: BLE001 - the worker must outlive any one send
                self._failed_note(a, f"unexpected {type(e).__name__}")
            with self._lock:
                self._inflight.discard(a.alert_id)
                if ok and a.alert_id is not None:
                    self._delivered.append((a.alert_id, "slack"))
                elif not ok:
                    self._failed[a.alert_id] = a
                    while len(self._failed) > self.MAX_FAILED:
                        self._failed.pop(next(iter(self._failed)))
            self._queue.task_done()

    def delivered(self) -> list[tuple[int, str]]:
        """(alert id, channel) pairs delivered in the background since the last call."""
        with self._lock:
            out, self._delivered = self._delivered, []
        return out

    def retry_failed(self) -> int:
        """Queue again every alert Slack refused earlier; returns how many."""
        with self._lock:
            again = list(self._failed.values())
        return sum(self.send(a) for a in again)

    def in_flight(self, alert_id: int | None) -> bool:
        """Queued, being sent, or delivered and not yet handed back by :meth:`delivered`."""
        with self._lock:
            return alert_id in self._inflight or any(d[0] == alert_id for d in self._delivered)

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for queued sends; True when none is left."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self._lock:
                if not self._inflight:
                    return True
            time.sleep(0.05)
        return False

    def _slack(self, a: Alert) -> bool:
        icon = {
            "critical": ":red_circle:",
            "warning": ":large_yellow_circle:",
            "info": ":large_green_circle:",
        }
        payload: dict[str, Any] = {
            "username": "westep-ops",
            "text": f"{icon.get(a.severity, '')} *{a.severity.upper()}*"
            + ("" if a.target == DEFAULT_TARGET else f" *{a.target}*")
            + f" `{a.category}` {a.kind}"
            + (f" (incident #{_ref(a.incident_id)})" if a.incident_id else "")
            + f": {redact(a.message)}"
            + (f"\n{hint}" if (hint := _slack_hint(a)) else ""),
        }
        if self.env.alert_channel:
            payload["channel"] = self.env.alert_channel

        @retry(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=0.5, max=4),
            reraise=False,
        )
        def post() -> None:
            try:
                r = httpx.post(
                    self.env.webhook_url or "",
                    json=payload,
                    timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 2.0)),
                )
            except httpx.HTTPError as e:
                raise _Retryable(type(e).__name__) from None
            if r.status_code == 429 or r.status_code >= 500:
                raise _Retryable(f"HTTP {r.status_code}")
            if r.status_code >= 400:
                raise ValueError(f"HTTP {r.status_code}")  # a bad request will not get better

        try:
            post()
            return True
        except RetryError as e:
            reason = str(e.last_attempt.exception()) if e.last_attempt else "unknown"
            self._failed_note(a, f"{reason} after 3 attempts")
        except ValueError as e:
            self._failed_note(a, str(e))
        return False

    def _failed_note(self, a: Alert, reason: str) -> None:
        text = f"slack webhook failed ({reason}); alert kept in the log and events file"
        self.failures.append(text)
        print(f"westep-ops monitor: {text}", file=sys.stderr)
        self.event(a.ts, type="notify_failed", channel="slack", severity="warning", reason=reason)


class PreviewNotifier(Notifier):
    """Sends nothing and writes nothing: what a preview of a tick would have alerted."""

    def __init__(self, env: Environment, tz: str, *, target: str = DEFAULT_TARGET) -> None:
        super().__init__(env, tz, target=target)
        self.previewed: list[Alert] = []

    def event(self, ts: datetime, **fields: Any) -> None:
        return None

    def alert(self, a: Alert) -> list[str]:
        self.previewed.append(a)
        return []

    def send(self, a: Alert) -> bool:
        return False
