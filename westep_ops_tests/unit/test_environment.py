"""The environment as pydantic-settings: credentials never printed, every behaviour kept.

No sandbox, no processes: these run in well under a second.
"""

from __future__ import annotations

import pytest

from westep_ops.environment import VARIABLES, Environment
from westep_ops.errors import WestepError
from westep_ops.redact import redact

PASSWORDS = [f"pw-{name.lower()}-Zq8" for name in VARIABLES]
KEYS = {
    "SUPABASE_ANON_KEY": "anon-key-eyJhbGciOi-7781",
    "SUPABASE_SERVICE_ROLE_KEY": "service-key-eyJhbGciOi-9913",
    "WEBHOOK_URL": "https://hooks.slack.example/services/T000/B000/XyZsecretPath",
}


def _values() -> dict[str, str]:
    out = {}
    for (name, (_attr, kind, _what)), pw in zip(VARIABLES.items(), PASSWORDS, strict=True):
        if kind == "pg":
            out[name] = f"postgresql://user_{pw[:6]}:{pw}@db.example:5432/postgres"
    out.update(KEYS)
    out["NEXT_PUBLIC_SUPABASE_URL"] = "https://project.example"
    out["WESTEP_OPS_APP_URL"] = "https://app.example"
    out["ALERT_CHANNEL"] = "#westep-alerts"
    return out


SECRETS = [pw for pw in PASSWORDS if any(pw in v for v in _values().values())] + list(KEYS.values())


def test_no_credential_in_repr_str_or_dump() -> None:
    env = Environment.from_env(_values())
    assert len(SECRETS) == 10  # seven DSNs, two keys, the webhook URL
    for shown in (
        repr(env),
        str(env),
        f"{env}",
        repr(env.model_dump()),
        str(env.model_dump()),
        env.model_dump_json(),
        repr(env.replace(storage_url=_values()["DIRECT_URL"])),
    ):
        assert not [s for s in SECRETS if s in shown], shown
    # what is not a credential is still shown, for debugging
    assert "https://app.example" in repr(env) and "#westep-alerts" in repr(env)


def test_attributes_give_the_plain_values() -> None:
    values = _values()
    env = Environment.from_env(values)
    for name, (attr, _kind, _what) in VARIABLES.items():
        assert getattr(env, attr) == values.get(name), name
    assert env.require("direct_url") == values["DIRECT_URL"]
    assert env.api_base == "https://app.example"
    assert not env.debug


def test_every_credential_is_registered_for_redaction() -> None:
    Environment.from_env(_values())
    for secret in SECRETS:
        assert secret not in redact(f"error: {secret} here"), secret


def test_mapping_is_the_only_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIRECT_URL", "postgresql://m:processpw@h/db")
    monkeypatch.setenv("DEBUG", "true")
    env = Environment.from_env({"DATABASE_URL": "postgresql://m:x@h:6432/db", "DIRECT_URL": " "})
    assert env.direct_url is None and not env.debug
    assert Environment.from_env().direct_url == "postgresql://m:processpw@h/db"
    assert Environment.from_env().debug
    # names are case-sensitive, as os.environ lookups were
    monkeypatch.delenv("DIRECT_URL")
    monkeypatch.setenv("direct_url", "postgresql://m:lower@h/db")
    assert Environment.from_env().direct_url is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DIRECT_URL", "http://h/db", "DIRECT_URL must be a postgresql:// URL (got scheme 'http')"),
        ("DATABASE_URL", "postgresql://u:p@h:notaport/db", "DATABASE_URL is not a valid URL"),
        ("WESTEP_OPS_STORAGE_URL", "postgresql:///db", "WESTEP_OPS_STORAGE_URL has no host"),
        ("WESTEP_OPS_APP_URL", "ftp://h", "WESTEP_OPS_APP_URL must be an http(s):// URL"),
        ("WEBHOOK_URL", "not a url", "WEBHOOK_URL is not a valid http(s) URL"),
    ],
)
def test_malformed_value_is_one_error_line(name: str, value: str, message: str) -> None:
    with pytest.raises(WestepError) as e:
        Environment.from_env({name: value})
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_require_and_replace() -> None:
    env = Environment.from_env({})
    with pytest.raises(WestepError, match=r"^WESTEP_OPS_STORAGE_URL is not set \(ops PostgreSQL"):
        env.require("storage_url")
    ops = "postgresql://ops:opsReplacedPw@h:5432/ops"
    got = env.replace(storage_url=ops)
    assert got.storage_url == ops and env.storage_url is None  # a copy: env is frozen
    assert "opsReplacedPw" not in redact(ops)
    with pytest.raises(WestepError):
        env.replace(storage_url="mysql://h/db")
    with pytest.raises(TypeError):
        env.replace(no_such="x")
    with pytest.raises(ValueError):  # pydantic's frozen-instance error
        env.direct_url = "postgresql://h/db"  # type: ignore[misc]
