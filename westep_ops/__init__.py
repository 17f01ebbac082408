"""westep-ops: monitoring, diagnosis and automatic recovery for PostgreSQL + pgbouncer apps.

The package keeps plain code (probes, repairs, SLA maths, the sandbox) apart from the
Dagster wiring in ``defs/`` so the CLI and Dagster call the same functions, and the CLI
never pays for importing Dagster or pandas.
"""

__version__ = "0.1.0"
