"""Benchmark the monthly SLA report on a month of 1-minute samples for every category.

    .venv/bin/python benchmarks/bench_sla.py

Generates 30 days x 1440 minutes of samples for H1-H7 and the performance monitor, plus
performance samples, a few hundred incidents and alerts, into a scratch database of the
demo sandbox's ops cluster; then builds the report (load + figures for the month and the
month before + four charts + Markdown) and prints its wall time and the process's peak
RSS. Goal: under 5 s and under 1 GiB.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from benchmarks.scratch_history import add_incidents, count_rows, scratch_history  # noqa: E402
from westep_ops.config import load_config  # noqa: E402
from westep_ops.monitoring import sla  # noqa: E402
from westep_ops.monitoring.history import HistoryStore  # noqa: E402
from westep_ops.sandbox.manager import Sandbox  # noqa: E402
from westep_ops.sandbox.state import default_base_port, sandbox_dir  # noqa: E402


def main() -> None:
    sb = Sandbox(sandbox_dir())
    sb.up(default_base_port())
    t0 = time.perf_counter()
    with scratch_history(sb, "westep_bench_sla", seed=11, critical_share=0.0005) as url:
        add_incidents(url, 300, seed=11)
        n = count_rows(url)
        print(f"generated {n} rows in {time.perf_counter() - t0:.1f} s")
        config = load_config(ROOT / "westep-ops.json")
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        store = HistoryStore(url)
        t0 = time.perf_counter()
        report = sla.build(
            store,
            config,
            "2026-10",
            target="default",
            reports_dir=Path("/tmp/westep-bench-reports"),
        )
        took = time.perf_counter() - t0
        store.close()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    f = report.figures
    print(
        f"monthly report over {n} rows: {took:.2f} s, peak RSS {rss:.0f} MB (before: {rss0:.0f} MB); "
        f"availability {f.availability:.4%}, {f.incidents} incidents, MTTR {f.mttr_mean_s:.0f} s -> {report.path}"
    )


if __name__ == "__main__":
    main()
