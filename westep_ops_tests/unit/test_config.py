"""Config names that must match the seed and the CLI, read without a process."""

from __future__ import annotations

from westep_ops.config import RepairAction


def test_repair_action_names_are_the_seeds() -> None:
    assert {a.value for a in RepairAction} >= {
        "restore_db_connection",
        "restore_connection_pool",
        "fix_table_permissions",
        "repair_auth",
        "fix_data_integrity",
        "optimize_performance",
    }


def test_cli_category_names_are_the_config_categories() -> None:
    from westep_ops.cli import CHECK_CATEGORIES
    from westep_ops.config import Category

    assert CHECK_CATEGORIES == [c.value for c in Category]
