"""The seed's routines as plain functions (no Dagster): the evening summary and the
Sunday statistics update. ``defs/maintenance/`` schedules them as Dagster jobs."""
