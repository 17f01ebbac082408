"""What each folder may import (ARCHITECTURE.md, "Layers"), read off the source.

The layering is the design: Dagster stays in the wiring, the pure analysis stays pure,
and the product never reaches into the sandbox. A new import across a line fails here
first, with the file and the module it named.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "westep_ops"
TOP = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.name[0] != "_"}
BASE = {"config", "errors", "redact", "environment", "db", "integrity", "targets"}
# area -> the other areas of westep_ops it may import (itself always)
ALLOWED = {
    "lib": {"config", "errors"},
    "probes": BASE | {"store", "store_schema"},
    "repairs": BASE | {"probes", "silences", "store", "store_schema"},
    "monitoring": BASE | {"lib", "probes", "repairs", "silences", "spool", "store", "store_schema"},
    "maintenance": BASE | {"monitoring", "repairs", "probes", "store", "store_schema"},
    "defs": TOP - {"cli", "sandbox", "definitions"},
    "cli": TOP - {"defs", "definitions", "resources"},
    "sandbox": TOP - {"cli", "defs", "definitions", "resources"},
}
DAGSTER = {"defs", "resources", "definitions"}  # the only places that import dagster


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [n.name for n in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def _area(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def test_each_folder_imports_only_what_its_layer_may() -> None:
    crossings = []
    for path in sorted(PACKAGE.rglob("*.py")):
        area = _area(path)
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "dagster" and area not in DAGSTER:
                crossings.append(f"{path.relative_to(PACKAGE)} imports {name}")
            if parts[0] != "westep_ops" or len(parts) < 2:
                continue
            target = parts[1]
            if area in ALLOWED and target != area and target not in ALLOWED[area]:
                crossings.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert crossings == []


def test_the_rules_name_real_folders() -> None:
    # A renamed folder must not leave a rule that silently allows everything.
    assert set(ALLOWED) <= TOP and all(allowed <= TOP for allowed in ALLOWED.values())
