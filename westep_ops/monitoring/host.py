"""What the parts of :class:`~westep_ops.monitoring.engine.Monitor` (repair requests,
the degraded state) use of the monitor: its attributes and the methods it defines."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from westep_ops.config import Config
from westep_ops.environment import Environment
from westep_ops.monitoring.history import HistoryStore
from westep_ops.probes.base import CheckResult

if TYPE_CHECKING:
    from westep_ops.monitoring.engine import TickResult
    from westep_ops.monitoring.observation import Observation


class MonitorHost:
    """Declared here, defined by the monitor."""

    env: Environment
    config: Config
    history: HistoryStore
    recovery: bool
    clock: Callable[[], datetime]
    _refused: list[CheckResult]

    if TYPE_CHECKING:

        def silenced_by(self, category: str) -> str | None: ...
        def _state(self, key: str) -> Any: ...
        def _set_state(self, key: str, value: Any) -> None: ...
        def _confirm(
            self,
            candidates: list[Observation],
            still: Callable[[Observation], bool] | None = None,
        ) -> list[Observation]: ...
        def _alert(
            self,
            out: TickResult,
            ts: datetime,
            kind: str,
            severity: str,
            category: str,
            message: str,
            incident_id: int | None,
            suppressed_by: str | None = None,
        ) -> None: ...
