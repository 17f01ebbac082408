"""The fleet: each target's effective config and environment, resolved from the config.

A config with a ``targets`` list names several monitored stacks; without one, today's
config and process environment are one target named ``default``, resolved exactly as
every command reads them (``Environment.from_env()``, the config as loaded).

Pure: no database, no network. :func:`resolve_targets` reads the variables each target
names (its ``env`` mapping, then its ``secretsFile``), checks them with the same
:class:`~westep_ops.environment.Environment` every command uses (which registers every
secret for redaction before anything can print it) and merges the shared sections with
the target's overrides (:func:`westep_ops.config.target_config`). :func:`select` picks
targets by name and tag, one clear error (exit 2) for an unknown name or an empty match.

What each target's variables are made of:

- a variable the target maps in ``env`` is read from the environment variable it names,
  and only from there;
- otherwise, with a ``secretsFile``, from that file's ``KEY=VALUE`` line of the same name
  (a fleet-wide variable the file lacks falls through to the next rule);
- otherwise the fleet-wide variables (:data:`SHARED`: the ops store, the Slack webhook
  and channel) come from the process environment under their own names, and the
  target's connection variables stay unset: a target never borrows another one's
  connection string.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from westep_ops.config import DEFAULT_TARGET, Config, Target, target_config
from westep_ops.environment import VARIABLES, Environment
from westep_ops.errors import WestepError
from westep_ops.redact import register_secret, register_url

# What every target needs before a probe can run: the monitor's two connections.
REQUIRED = ("DATABASE_URL", "DIRECT_URL")
# One per deployment, not per target: read under their own names unless a target maps them.
SHARED = ("WESTEP_OPS_STORAGE_URL", "WEBHOOK_URL", "ALERT_CHANNEL")
MAX_SECRETS_FILE = 1_000_000  # bytes; a KEY=VALUE file of connection strings is tiny

Origin = Literal["env", "file", "shared", "unmapped"]


@dataclass(frozen=True)
class Source:
    """Where one variable of a target comes from. Never holds the value."""

    variable: str  # the name westep-ops reads, e.g. DIRECT_URL
    origin: Origin
    where: str | None  # the environment variable's name, or the secrets file's path
    is_set: bool

    def describe(self) -> str:
        if self.origin == "env":
            return f"${self.where}"
        if self.origin == "shared":
            return f"${self.where} (shared)"
        if self.origin == "file":
            return f"{self.where}: {self.variable}"
        return "not mapped"

    def as_json(self) -> dict[str, object]:
        return {"from": self.origin, "name": self.where, "set": self.is_set}


@dataclass(frozen=True)
class TargetSources:
    """A target's variables as the strings a driver needs, and where each came from."""

    values: dict[str, str]
    sources: dict[str, Source]


@dataclass(frozen=True)
class ResolvedTarget:
    """One target: its name, tags, effective config and checked environment."""

    name: str
    tags: Mapping[str, str]
    config: Config
    environment: Environment
    sources: Mapping[str, Source] = field(default_factory=dict)

    def missing(self) -> list[str]:
        """The required variables (:data:`REQUIRED`) that are not set."""
        return [name for name in REQUIRED if not self.sources[name].is_set]


def target_specs(config: Config) -> list[Target]:
    """The config's targets; without a ``targets`` list, the one target ``default``, whose
    variables are the process environment's under their own names (today's behaviour)."""
    if config.targets:
        return list(config.targets)
    return [Target(name=DEFAULT_TARGET, env={name: name for name in VARIABLES})]


def read_secrets_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (blank lines, ``#`` comments, ``export KEY=...`` and quoted
    values allowed). Every value is registered as a secret by its kind before returning;
    an error names the file and the line number, never the line."""
    try:
        if path.stat().st_size > MAX_SECRETS_FILE:
            raise WestepError(f"secrets file {path}: larger than {MAX_SECRETS_FILE} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WestepError(f"secrets file {path}: not found") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or type(e).__name__
        raise WestepError(f"secrets file {path}: cannot read ({reason})") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not key.replace("_", "").isalnum() or not key.isascii():
            raise WestepError(
                f"secrets file {path}: line {number}: not KEY=VALUE (the line is not shown)"
            )
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        kind = VARIABLES.get(key, ("", "secret", ""))[1]
        if kind in ("pg",):
            register_url(value)
        elif kind != "http" and kind != "text":
            register_secret(value)
        values[key] = value
    return values


def target_sources(
    target: Target, environ: Mapping[str, str], base_dir: Path | None = None
) -> TargetSources:
    """Read a target's variables (see the module's docstring for the order); a relative
    ``secretsFile`` is taken from ``base_dir`` (the config file's folder), else the
    working directory. Values are not checked here: :func:`resolve_target` does."""
    from_file: dict[str, str] = {}
    file_name: str | None = None
    if target.secrets_file is not None:
        path = Path(target.secrets_file).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        file_name = str(path)
        from_file = read_secrets_file(path)
    values: dict[str, str] = {}
    sources: dict[str, Source] = {}
    for name in VARIABLES:
        if name in target.env:
            value = environ.get(target.env[name], "").strip()
            origin: Origin = "env"
            where: str | None = target.env[name]
        elif file_name is not None and (name in from_file or name not in SHARED):
            value, origin, where = from_file.get(name, "").strip(), "file", file_name
        elif name in SHARED:
            value, origin, where = environ.get(name, "").strip(), "shared", name
        else:
            value, origin, where = "", "unmapped", None
        if value:
            values[name] = value
        sources[name] = Source(name, origin, where, bool(value))
    return TargetSources(values, sources)


def resolve_target(
    config: Config,
    target: Target,
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> ResolvedTarget:
    """One target's effective config and checked environment; a malformed value is one
    line naming the target and where the value came from (never the value)."""
    environ = os.environ if environ is None else environ
    read = target_sources(target, environ, base_dir)
    given = dict(read.values)
    if "DEBUG" in environ:
        given["DEBUG"] = environ["DEBUG"]
    try:
        env = Environment.from_env(given)
    except WestepError as e:
        name = str(e).split(" ", 1)[0]
        source = read.sources.get(name)
        where = f" (from {source.describe()})" if source and source.origin != "env" else ""
        if source and source.origin == "env" and source.where != name:
            where = f" (from ${source.where})"
        raise WestepError(f"target {target.name}: {e}{where}", e.exit_code) from None
    effective = config if not config.targets else target_config(config, target)
    return ResolvedTarget(target.name, dict(target.tags), effective, env, read.sources)


def resolve_targets(
    config: Config,
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> list[ResolvedTarget]:
    """Every target of ``config`` (the one ``default`` target without a ``targets``
    list), in the config's order; the first malformed value raises WestepError (exit 2).
    ``environ`` defaults to the process environment."""
    return [resolve_target(config, t, environ, base_dir) for t in target_specs(config)]


def parse_tags(pairs: Iterable[str]) -> dict[str, str]:
    """``["team=core", "environment=prod"]`` -> a mapping; one clear error for ``team``."""
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise WestepError(f"--tag {pair!r} is not KEY=VALUE (e.g. --tag environment=prod)")
        tags[key.strip()] = value.strip()
    return tags


T = TypeVar("T", ResolvedTarget, Target)


def select(
    targets: Sequence[T], names: Iterable[str] = (), tags: Mapping[str, str] | None = None
) -> list[T]:
    """The targets named (any of ``names``; all when none) that carry every tag of
    ``tags``, in their order. An unknown name, or nothing left, is one WestepError (2)."""
    known = [t.name for t in targets]
    wanted = list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise WestepError(
            f"unknown target{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
            f" (targets: {', '.join(known)})"
        )
    chosen = [t for t in targets if not wanted or t.name in wanted]
    want_tags = dict(tags or {})
    chosen = [t for t in chosen if all(t.tags.get(k) == v for k, v in want_tags.items())]
    if not chosen:
        asked = [f"--target {n}" for n in wanted]
        asked += [f"--tag {k}={v}" for k, v in want_tags.items()]
        raise WestepError(f"no target matches {' '.join(asked)} (targets: {', '.join(known)})")
    return chosen
