"""Which server answers are the monitor's own problem (a refusal), not an outage."""

from __future__ import annotations

from psycopg import errors

from westep_ops.db import refusal


def test_the_logins_own_connection_limit_is_a_refusal_not_an_outage() -> None:
    # Under load, pgbouncer may keep the login's servers idle up to its CONNECTION LIMIT;
    # "PostgreSQL does not accept connections" would send the on-call to the wrong place.
    own = errors.TooManyConnections('FATAL:  too many connections for role "westep_monitor"')
    assert refusal(own) == (
        "the monitor's login has reached its own connection limit"
        ' (too many connections for role "westep_monitor")'
    )
    full = errors.TooManyConnections("FATAL:  sorry, too many clients already")
    assert refusal(full) is None  # the server is full: an outage, as before
