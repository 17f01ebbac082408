"""Unit tests: no sandbox, no database, no services; the whole folder runs in seconds.

The ``sandbox`` fixture is not visible here (it lives in ``integration/conftest.py``).
Every unit test runs with the ops store and the monitored stack's URLs unset, so a test
that reaches for a database fails at once instead of quietly using one, and with reports,
logs and per-user state in scratch folders, never the checkout's ``logs/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Connection settings a unit test must never use (names only: no value is read).
CONNECTION_ENV = (
    "DATABASE_URL",
    "DIRECT_URL",
    "PGBOUNCER_ADMIN_URL",
    "WESTEP_OPS_STORAGE_URL",
    "WESTEP_OPS_REPAIR_URL",
)


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("unit")


@pytest.fixture(autouse=True)
def offline_environment(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CONNECTION_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WESTEP_OPS_LOG_DIR", str(scratch / "logs"))
    monkeypatch.setenv("WESTEP_OPS_REPORTS_DIR", str(scratch / "reports"))
    monkeypatch.setenv("XDG_STATE_HOME", str(scratch / "state"))
