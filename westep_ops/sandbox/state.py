"""The sandbox's persistent state: ports, generated credentials, where things live.

Kept in ``<dir>/sandbox.json`` (mode 0600). Credentials are generated once per sandbox,
so tests can look for them in every output and prove they never leak.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

from westep_ops.errors import WestepError
from westep_ops.redact import register_secret

DEFAULT_DIR = ".westep/sandbox"
# Below Linux's ephemeral range (32768-60999): an outgoing connection can otherwise be
# handed one of these ports as its source port, and the server then cannot bind it.
DEFAULT_BASE_PORT = 25430
DIR_ENV = "WESTEP_OPS_SANDBOX_DIR"
PORT_ENV = "WESTEP_OPS_SANDBOX_BASE_PORT"
HOST = "127.0.0.1"
TARGET_DB = "postgres"
OPS_DB = "westep_ops"
POOL_SIZE = 10
# A fleet sandbox (``sandbox up --targets N``): target 1 is TARGET_DB, today's sandbox;
# target T > 1 is database ``westep_tT`` in the same cluster, behind the same pgbouncer.
MAX_TARGETS = 200


def target_db(target: int) -> str:
    """The database of sandbox target ``target`` (1 is ``postgres``, today's sandbox)."""
    return TARGET_DB if target == 1 else f"westep_t{target}"


# Login roles of the target and of pgbouncer's admin console whose passwords we generate.
TARGET_LOGINS = (
    "supabase_admin",
    "postgres",
    "authenticator",
    "supabase_auth_admin",
    "westep_monitor",
    "westep_role_probe",
)
BOUNCER_ONLY = ("pgbouncer_admin", "pgbouncer_stats")


def new_password() -> str:
    return secrets.token_urlsafe(18)


def new_anon_key() -> str:
    """The stand-in's anon key: it maps to role ``anon``, as Supabase's anon JWT does."""
    return "sandbox-anon-" + secrets.token_urlsafe(24)


@dataclass
class SandboxState:
    base_port: int = DEFAULT_BASE_PORT
    passwords: dict[str, str] = field(default_factory=dict)
    ops_password: str = ""
    service_role_key: str = ""
    anon_key: str = ""
    target_initialized: bool = False
    ops_initialized: bool = False
    # How many target databases exist and are complete (schema and seed rows): 1 is
    # today's sandbox; a state file written before fleets existed loads as 1.
    targets: int = 1

    @property
    def target_port(self) -> int:
        return self.base_port

    @property
    def bouncer_port(self) -> int:
        return self.base_port + 1

    @property
    def ops_port(self) -> int:
        return self.base_port + 2

    @property
    def app_port(self) -> int:
        return self.base_port + 3

    @property
    def supabase_port(self) -> int:
        return self.base_port + 4

    @classmethod
    def new(cls, base_port: int) -> SandboxState:
        if not 1024 <= base_port <= 65535 - 4:  # five ports: N..N+4
            raise WestepError(f"sandbox base port {base_port} is out of range (1024-65531)")
        return cls(
            base_port=base_port,
            passwords={r: new_password() for r in (*TARGET_LOGINS, *BOUNCER_ONLY)},
            ops_password=new_password(),
            service_role_key="sandbox-service-" + secrets.token_urlsafe(24),
            anon_key=new_anon_key(),
        )

    def register_secrets(self) -> None:
        for pw in (
            *self.passwords.values(),
            self.ops_password,
            self.service_role_key,
            self.anon_key,
        ):
            if pw:
                register_secret(pw)

    def url(self, user: str, port: int | None = None, db: str = TARGET_DB) -> str:
        pw = self.ops_password if user == "westep_ops" else self.passwords[user]
        return f"postgresql://{user}:{quote(pw, safe='')}@{HOST}:{port or self.target_port}/{db}"

    @property
    def role_probe_url(self) -> str:
        """The optional role-probe login (member of the API roles: write-capable). Not in
        :meth:`env`: the default monitoring identity cannot write; tests opt in."""
        return self.url("westep_role_probe")

    def check_target(self, target: int) -> str:
        """The database of ``target``, or an error naming the targets this sandbox has."""
        if not 1 <= target <= self.targets:
            have = "only target 1" if self.targets == 1 else f"targets 1-{self.targets}"
            raise WestepError(
                f"no sandbox target {target}: this sandbox has {have} "
                "(add targets with 'westep-ops sandbox up --targets N')"
            )
        return target_db(target)

    def env(self, target: int = 1) -> dict[str, str]:
        """The environment that points westep-ops at this sandbox's target ``target``: its
        database direct and through pgbouncer; the ops store, pgbouncer consoles, keys and
        the app and Supabase stand-ins are shared (the stand-ins serve target 1 only)."""
        db = self.check_target(target)
        ops = self.url("westep_ops", self.ops_port, OPS_DB)
        return {
            "DATABASE_URL": self.url("westep_monitor", self.bouncer_port, db),
            "DIRECT_URL": self.url("westep_monitor", db=db),
            "PGBOUNCER_ADMIN_URL": self.url("pgbouncer_stats", self.bouncer_port, "pgbouncer"),
            "WESTEP_OPS_REPAIR_URL": self.url("postgres", db=db),
            "WESTEP_OPS_PGBOUNCER_REPAIR_URL": self.url(
                "pgbouncer_admin", self.bouncer_port, "pgbouncer"
            ),
            "NEXT_PUBLIC_SUPABASE_URL": f"http://{HOST}:{self.supabase_port}",
            "WESTEP_OPS_APP_URL": f"http://{HOST}:{self.app_port}",
            "SUPABASE_SERVICE_ROLE_KEY": self.service_role_key,
            "SUPABASE_ANON_KEY": self.anon_key,
            "WESTEP_OPS_STORAGE_URL": ops,
            # Dagster's storage needs the psycopg2 driver spelled out (SQLAlchemy 2.1 maps a
            # bare postgresql:// to psycopg 3, which dagster-postgres 0.29 cannot use).
            "WESTEP_OPS_DAGSTER_STORAGE_URL": ops.replace(
                "postgresql://", "postgresql+psycopg2://", 1
            ),
        }


class Layout:
    """Paths inside the sandbox directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.state_file = self.root / "sandbox.json"
        self.target = self.root / "target"
        self.ops = self.root / "ops"
        self.bouncer = self.root / "pgbouncer"
        self.app = self.root / "app"
        self.faults = self.root / "faults"

    def load(self) -> SandboxState | None:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise WestepError(f"sandbox state {self.state_file} is unreadable: {e}") from None
        state = SandboxState(**data)
        state.register_secrets()
        return state

    def save(self, state: SandboxState) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(state), f, indent=2)
        tmp.replace(self.state_file)


def sandbox_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    return Path(explicit or os.environ.get(DIR_ENV) or DEFAULT_DIR)


def default_base_port() -> int:
    raw = os.environ.get(PORT_ENV)
    if not raw:
        return DEFAULT_BASE_PORT
    try:
        return int(raw)
    except ValueError:
        raise WestepError(f"{PORT_ENV} must be a port number (got {raw!r})") from None
