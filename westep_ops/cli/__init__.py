"""The ``westep-ops`` command line: one module per command group.

``root`` holds the group and ``main``; ``health`` (test-connection, health-check,
db-status, performance, diagnose), ``repair`` (repair, recover, quarantine), ``monitor``,
``alerts`` (alerts, silence), ``sla`` (trends), ``sandbox`` (sandbox, drill), ``config``
and ``ui`` hold the commands; ``common`` the helpers they share.

Kept light on purpose: Dagster and pandas are never imported on the path of the probe
commands, and a command's module is imported only when it runs, so ``westep-ops
test-connection`` starts in a fraction of a second. Every error the user can cause ends
as one ``error: ...`` line on stderr and a non-zero exit code, never a traceback (set
``DEBUG=true`` to see one for an unexpected failure).
"""

from westep_ops.cli.common import CHECK_CATEGORIES
from westep_ops.cli.root import cli, main

__all__ = ["CHECK_CATEGORIES", "cli", "main"]
