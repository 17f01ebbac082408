"""Dagster wiring per domain, and what every definition shares: owners, the team's time
zone, quiet logs.

Each domain (``health``, ``monitoring``, ``repairs``, ``maintenance``, ``sla``) holds its
own assets, jobs, partitions, schedules and sensors and builds its own ``Definitions`` in
``<domain>/definitions.py``; ``westep_ops/definitions.py`` merges them and binds the
resources once. Domain logic lives in plain modules (``probes/``, ``repairs/``,
``monitoring/``, ``maintenance/``, ``lib/``); the files here only wire it into Dagster.

The time zone of every partition and schedule is the config file's (Asia/Tokyo by
default), and the target dimension of the partitions is its ``targets`` names (``default``
without a list); the config holds no secret, so reading it here keeps definitions
secret-free.

Owners come from ``WESTEP_OPS_DAGSTER_OWNERS`` (comma-separated e-mails or ``team:name``;
not a secret, so reading it when the definitions load is fine), ``team:on-call`` by
default. Two Dagster 1.13 beta notices are silenced here, before any definition is
built: every process that loads the definitions (code server, each run) printed them
again, about 290 lines a ``dagster dev`` session. Only these two messages are dropped.
"""

import os
import re
import warnings

from dagster import StaticPartitionsDefinition

from westep_ops.config import load_config
from westep_ops.targets import target_specs

warnings.filterwarnings(
    "ignore", message=re.escape("Parameter `backfill_policy` of function `asset`")
)
# Dagster copies the sensor when it binds resources and passes owners=[] along.
warnings.filterwarnings(
    "ignore", message=re.escape("Parameter `owners` of initializer `SensorDefinition.__init__`")
)

_CONFIG = load_config()
TIMEZONE = _CONFIG.timezone
# The fleet's target names when the definitions load: the target dimension of every
# partitioned asset (``default`` without a targets list). A target added to the config
# appears when the code location reloads.
TARGETS = [t.name for t in target_specs(_CONFIG)]
# One partition per target: health_check and probe_samples, and the target dimension of
# the daily and monthly assets (one object, so Dagster maps them onto each other).
target_partitions = StaticPartitionsDefinition(TARGETS)
DEFAULT_OWNERS = ("team:on-call",)


def owners() -> list[str]:
    """The assets' owners: ``WESTEP_OPS_DAGSTER_OWNERS`` or ``team:on-call``."""
    raw = os.environ.get("WESTEP_OPS_DAGSTER_OWNERS", "")
    found = [o.strip() for o in raw.split(",") if o.strip()]
    bad = [o for o in found if not (o.startswith("team:") or re.fullmatch(r"[^@\s]+@[^@\s]+", o))]
    if bad:
        raise ValueError(
            f"WESTEP_OPS_DAGSTER_OWNERS: {', '.join(bad)} is neither an e-mail nor team:NAME"
        )
    return found or list(DEFAULT_OWNERS)
