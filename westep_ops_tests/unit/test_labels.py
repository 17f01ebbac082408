"""Which alerts carry a label command, from constructed alerts (no sandbox)."""

from __future__ import annotations

from datetime import UTC, datetime


def test_only_opened_alerts_carry_a_command_and_a_local_id_points_to_the_list() -> None:
    from westep_ops.monitoring.notify import Alert

    now = datetime.now(UTC)
    assert Alert(now, "reminder", "critical", "pool", "m", 3, 9).label_hint() is None
    assert Alert(now, "opened", "critical", "pool", "m", 3, None).label_hint() is None
    local = Alert(now, "opened", "critical", "pool", "m", -1, -2).label_hint()
    assert local == "label it once the ops store has it: westep-ops alerts list --unlabelled"
