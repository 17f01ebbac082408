"""Where alerts go: a log line, a JSON event, and Slack.

- ``logs/monitoring-alerts-YYYY-MM-DD.log``: one line per alert;
- ``logs/monitoring-events-YYYY-MM-DD.json``: JSON Lines, one event per line, for jq:
  ``jq -c 'select(.severity == "error" or .severity == "critical")' logs/monitoring-events-$(date +%F).json``;
- Slack incoming webhook (``WEBHOOK_URL``, ``ALERT_CHANNEL``): httpx with retries and
  backoff (tenacity); a failing webhook is logged, never raised, and its URL (the secret)
  never printed.

Dates are in the configured time zone, as the seed's team reads its logs in Tokyo time.
"""

from __future__ import annotations

import json
import sys
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

from westep_ops.environment import Environment
from westep_ops.redact import redact
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

    def line(self, tz: ZoneInfo) -> str:
        ref = f" incident #{self.incident_id}" if self.incident_id else ""
        return (
            f"{self.ts.astimezone(tz).isoformat(timespec='seconds')} {self.severity.upper()}"
            f" [{self.category}]{ref} {self.kind} (alert {self.alert_id}): {redact(self.message)}"
        )


class _Retryable(Exception):
    pass


class Notifier:
    def __init__(self, env: Environment, tz: str, *, timeout_s: float = 5.0) -> None:
        self.env = env
        self.tz = ZoneInfo(tz)
        self.timeout_s = timeout_s
        self.failures: list[str] = []

    def _day(self, ts: datetime) -> str:
        return ts.astimezone(self.tz).strftime("%Y-%m-%d")

    def event(self, ts: datetime, **fields: Any) -> None:
        """Append one JSON event (redacted) to the day's event file."""
        record = {"ts": ts.astimezone(self.tz).isoformat(timespec="seconds"), **fields}
        path = log_dir() / f"monitoring-events-{self._day(ts)}.json"
        with open(path, "a", encoding="utf-8") as f:
            f.write(redact(json.dumps(record, default=str, ensure_ascii=False)) + "\n")

    def alert(self, a: Alert) -> list[str]:
        """Send ``a`` everywhere it should go; returns the channels that took it."""
        channels = []
        path: Path = log_dir() / f"monitoring-alerts-{self._day(a.ts)}.log"
        with open(path, "a", encoding="utf-8") as f:
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
            if self._slack(a):
                channels.append("slack")
        return channels

    def _slack(self, a: Alert) -> bool:
        icon = {
            "critical": ":red_circle:",
            "warning": ":large_yellow_circle:",
            "info": ":large_green_circle:",
        }
        payload: dict[str, Any] = {
            "username": "westep-ops",
            "text": f"{icon.get(a.severity, '')} *{a.severity.upper()}* `{a.category}` {a.kind}"
            + (f" (incident #{a.incident_id})" if a.incident_id else "")
            + f": {redact(a.message)}",
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
                r = httpx.post(self.env.webhook_url or "", json=payload, timeout=self.timeout_s)
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
            self._failed(a, f"{reason} after 3 attempts")
        except ValueError as e:
            self._failed(a, str(e))
        return False

    def _failed(self, a: Alert, reason: str) -> None:
        text = f"slack webhook failed ({reason}); alert kept in the log and events file"
        self.failures.append(text)
        print(f"westep-ops monitor: {text}", file=sys.stderr)
        self.event(a.ts, type="notify_failed", channel="slack", severity="warning", reason=reason)
