"""A real local stack to monitor: PostgreSQL 15 + pgbouncer + an app stand-in, and an ops
PostgreSQL for the monitor's own memory. Everything on 127.0.0.1, state under ``.westep/``.
"""
