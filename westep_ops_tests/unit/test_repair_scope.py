"""Repair scope declared in the config: mustSeeRows names listed roles only."""

from __future__ import annotations

import pytest

from westep_ops.config import parse_config
from westep_ops.errors import WestepError


def test_must_see_rows_names_listed_roles_only() -> None:
    with pytest.raises(WestepError, match="mustSeeRows names roles not in 'roles': anon"):
        parse_config(
            {
                "criticalTables": [
                    {"table": "public.x", "roles": ["authenticated"], "mustSeeRows": ["anon"]}
                ]
            }
        )
