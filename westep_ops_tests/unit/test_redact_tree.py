"""Redacting what is serialised to JSON: the values, never the serialised text."""

from __future__ import annotations

import json

from westep_ops.redact import MASK, _known, redact_tree, register_secret


def test_a_secret_next_to_an_escape_leaves_parseable_json() -> None:
    # "nlab" is not in the message, but redacting the JSON text `x\nlabel` found it after
    # the backslash and wrote `x\***el`: an invalid escape, a line no reader could parse.
    register_secret("nlab")
    register_secret("s3cr3t-pw")
    try:
        record = {"message": "x\nlabel", "n": 3, "nested": [{"dsn": "pw is s3cr3t-pw"}]}
        line = json.dumps(redact_tree(record))
        back = json.loads(line)
        assert back["message"] == "x\nlabel" and back["n"] == 3
        assert back["nested"][0]["dsn"] == f"pw is {MASK}"
        assert "s3cr3t-pw" not in line
    finally:
        _known.discard("nlab")
        _known.discard("s3cr3t-pw")


def test_keys_and_non_json_leaves_are_redacted_as_text() -> None:
    from datetime import UTC, datetime

    register_secret("k3y-value")
    try:
        out = redact_tree({"k3y-value": datetime(2026, 12, 6, tzinfo=UTC), "t": ("a", None)})
        assert out == {MASK: "2026-12-06 00:00:00+00:00", "t": ["a", None]}
    finally:
        _known.discard("k3y-value")
