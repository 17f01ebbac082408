"""Data-safety rules are validated when the config is read (no sandbox)."""

from __future__ import annotations

import pytest

from westep_ops.config import parse_config
from westep_ops.errors import WestepError


def test_rule_fields_are_validated() -> None:
    base = {"name": "r", "table": "public.profiles", "columns": ["username"]}
    with pytest.raises(WestepError, match="needs 'orderBy'"):
        parse_config({"integrityRules": [{**base, "kind": "duplicates", "repair": "quarantine"}]})
    with pytest.raises(WestepError, match="'orderBy' applies to duplicates rules only"):
        parse_config({"integrityRules": [{**base, "kind": "not_null", "orderBy": ["id"]}]})
    with pytest.raises(WestepError, match="repair"):
        parse_config({"integrityRules": [{**base, "kind": "not_null", "repair": "delete"}]})
    ok = parse_config({"integrityRules": [{**base, "kind": "duplicates"}]})
    assert ok.integrity_rules[0].repair == "report"  # cleaning is opt-in
