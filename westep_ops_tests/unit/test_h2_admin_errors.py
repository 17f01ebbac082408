"""H2 reports an admin-console failure that is not a refusal as an error, never a crash."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from westep_ops.config import Category, Config
from westep_ops.environment import Environment
from westep_ops.probes.base import CheckResult, Status
from westep_ops.probes.health import h2_pool
from westep_ops.probes.session import ProbeSession


def test_a_database_error_on_the_admin_console_is_an_error_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The except branch for DB errors used to call reason(e) while an earlier branch had
    # made "reason" a local string: UnboundLocalError instead of a result.
    def broken(_session: Any, _what: str) -> list[dict[str, Any]]:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(h2_pool, "admin_show", broken)
    session = ProbeSession(Environment.from_env({}), Config())
    res = CheckResult(Category.pool)
    assert h2_pool._pool_from_admin(session, res, None) is None  # noqa: SLF001 - the branch itself
    res.finish("ok")
    assert res.status is Status.error
    assert "server closed the connection unexpectedly" in res.summary
