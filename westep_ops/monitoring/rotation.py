"""Weekly log rotation (the seed's ``tar -czf logs-$(date +%F).tar.gz *.log *.json *.md``).

Safer than the seed's shell: today's files are left alone (the monitor is still writing
them), the repair audit (``*.jsonl``) is never archived away (the rate limit reads it),
and originals are removed only after the archive has been read back and every member's
content compared byte for byte. Whatever pointed at an archived file (a daily report's
path in the Dagster UI) can be told where it went: :meth:`Rotation.daily_reports`.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from westep_ops.config import DEFAULT_TARGET


@dataclass
class Rotation:
    archive: Path | None
    files: list[str]

    def daily_reports(self) -> dict[tuple[str, str], str]:
        """(day YYYY-MM-DD, target) -> file name of each archived daily report:
        ``daily-report-<day>.md`` (the target ``default``) or ``daily-report-<target>-<day>.md``."""
        found = (
            re.fullmatch(r"daily-report-(?:([A-Za-z][A-Za-z0-9_-]*)-)?(\d{4}-\d{2}-\d{2})\.md", f)
            for f in self.files
        )
        return {(m.group(2), m.group(1) or DEFAULT_TARGET): m.group(0) for m in found if m}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rotate_logs(directory: Path, today: str) -> Rotation:
    """Archive ``*.log``, ``*.json``, ``*.md`` not dated ``today`` into ``logs-<today>.tar.gz``."""
    files = sorted(
        p
        for pattern in ("*.log", "*.json", "*.md")
        for p in directory.glob(pattern)
        if today not in p.name and p.is_file()
    )
    if not files:
        return Rotation(None, [])
    archive = directory / f"logs-{today}.tar.gz"
    n = 2
    while archive.exists():
        archive = directory / f"logs-{today}-{n}.tar.gz"
        n += 1
    digests = {p.name: _sha(p.read_bytes()) for p in files}
    tmp = archive.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for p in files:
            tar.add(p, arcname=p.name)
    with tarfile.open(tmp, "r:gz") as tar:
        seen = {}
        for member in tar.getmembers():
            f = tar.extractfile(member)
            seen[member.name] = _sha(f.read()) if f else ""
    if seen != digests:
        tmp.unlink()
        raise OSError("the archive does not read back identical: originals kept")
    tmp.rename(archive)
    for p in files:
        p.unlink()
    return Rotation(archive, [p.name for p in files])
