"""A query a check declares before anything runs, and what can come back for it.

Checks never execute SQL themselves: each declares its :class:`Query` objects and the
sweep's runner (:mod:`.batch`) executes them, several to a round trip, and hands back an
:class:`~westep_ops.probes.health.batch.Answers` the check judges. The same objects run
in the batch and, when a batch fails, one by one: there is one code path per check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from psycopg import sql

from westep_ops.config import Category

if TYPE_CHECKING:
    from westep_ops.probes.health.batch import Answers


@dataclass(frozen=True, eq=False)  # identity: two checks' queries never answer for each other
class Query:
    """One item a check needs from the database.

    The shapes the runner knows: a catalog query (``params`` bound client-side, its rows
    as dicts); a ``scalar`` counted in a read-only transaction bounded by
    statement_timeout and lock_timeout (the batch folds a target's scalars into one
    SELECT, so statement_timeout bounds them together); ``as_role``: a scalar read after
    ``SET LOCAL ROLE`` in that transaction; ``rows=False``: a statement that returns
    nothing, answered by the time its round trip started (H5 times its NOTIFY from it).
    """

    check: Category | None  # None: shared (the lock look-up of H3 and H4)
    name: str
    sql: str | sql.Composable
    params: Any = None
    target: str = "direct"
    scalar: bool = False
    as_role: str | None = None
    rows: bool = True
    reads: tuple[str, ...] = ()  # tables whose ACCESS EXCLUSIVE lock blocks this query

    @property
    def in_transaction(self) -> bool:
        return self.scalar or self.as_role is not None


@dataclass(frozen=True)
class Locked:
    """Not run: ``table``, which the query reads, is locked (the ledger says by whom)."""

    table: str


@dataclass(frozen=True)
class NotRun:
    """Not run: the check's time for re-running items one by one was spent."""

    budget_ms: float


# rows (list of dicts), a scalar, a round trip's start time, or why there is no answer
Outcome = Any


class Needs(Protocol):
    """What one check asks of the database in a sweep (each check module's ``Needs``)."""

    def first(self) -> list[Query]:
        """Round trip 1's queries."""
        ...

    def second(self, answers: Answers) -> list[Query]:
        """Round trip 2's queries, declared given round trip 1's answers."""
        ...
