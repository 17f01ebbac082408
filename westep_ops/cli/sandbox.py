"""The local sandbox (up, down, status, env, fault, faults) and the fault drill, which
runs on the sandbox only."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from westep_ops.cli.common import _separate_store, _status_word, _table
from westep_ops.cli.status import pick_targets, target_options
from westep_ops.errors import WestepError

FAULT_SECONDS = 300


def _sandbox_dir_option(f: Any) -> Any:
    return click.option(
        "--dir",
        "sandbox_dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Sandbox state directory (default: $WESTEP_OPS_SANDBOX_DIR or .westep/sandbox).",
    )(f)


def _sandbox(sandbox_dir: str | None) -> Any:
    from westep_ops.sandbox.manager import Sandbox
    from westep_ops.sandbox.state import sandbox_dir as resolve

    return Sandbox(resolve(sandbox_dir))


@click.group("sandbox")
def sandbox_group() -> None:
    """A local PostgreSQL 15 + pgbouncer + app stand-in to monitor (127.0.0.1 only)."""


@sandbox_group.command("up")
@_sandbox_dir_option
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65535 - 4),
    default=None,
    help="First of five ports: target, pgbouncer (+1), ops (+2), app (+3), Supabase"
    " stand-in (+4). "
    "Default $WESTEP_OPS_SANDBOX_BASE_PORT or 25430; fixed once the sandbox exists.",
)
@click.option(
    "--targets",
    type=click.IntRange(1, 200),
    default=None,
    help="A fleet: this many target databases in the target PostgreSQL, each with the"
    " WeStep schema and seed rows and its own pgbouncer pool (1 is 'postgres', today's"
    " sandbox; T > 1 is 'westep_tT'). Default: 1 for a new sandbox, else what it has;"
    " more adds targets, fewer is refused.",
)
def sandbox_up(sandbox_dir: str | None, base_port: int | None, targets: int | None) -> None:
    """Create (first time) and start the sandbox. Safe to run again: running parts are kept."""
    from westep_ops.sandbox.state import default_base_port

    sb = _sandbox(sandbox_dir)
    if sb.exists and base_port is not None and base_port != sb.state.base_port:
        raise WestepError(
            f"this sandbox already uses base port {sb.state.base_port}; "
            "run 'westep-ops sandbox down' and remove its directory to change ports"
        )
    comps = sb.up(base_port or default_base_port(), targets)
    _print_components(comps)
    if sb.state.targets > 1:
        click.echo(f"targets: {sb.state.targets} (westep-ops sandbox targets)")
    click.echo(
        f'sandbox up in {sb.layout.root}; load its environment with: eval "$(westep-ops sandbox env)"'
    )


@sandbox_group.command("down")
@_sandbox_dir_option
def sandbox_down(sandbox_dir: str | None) -> None:
    """Stop the processes this sandbox started (from its pid files; data is kept)."""
    sb = _sandbox(sandbox_dir)
    stopped = sb.down()
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


def _print_components(comps: list[Any]) -> None:
    rows = [
        [
            c.name,
            _status_word(c.running) if c.running else click.style("stopped", fg="yellow"),
            f"127.0.0.1:{c.port}",
            str(c.pid or ""),
        ]
        for c in comps
    ]
    click.echo(_table(rows, ["component", "status", "address", "pid"]))


@sandbox_group.command("status")
@_sandbox_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def sandbox_status(sandbox_dir: str | None, as_json: bool) -> None:
    """Show which sandbox processes run and which faults are on. Exit 1 if any part is down."""
    from westep_ops.sandbox import faults

    sb = _sandbox(sandbox_dir)
    if not sb.exists:
        raise WestepError(
            f"no sandbox in {sb.layout.root}: run 'westep-ops sandbox up'", exit_code=1
        )
    comps = sb.status()
    active = faults.active(sb)
    by_target = faults.active_by_target(sb)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "components": [c.__dict__ for c in comps],
                    "faults": active,
                    "targets": _target_rows(by_target),
                },
                indent=2,
            )
        )
    else:
        _print_components(comps)
        click.echo("faults on: " + (", ".join(active) if active else "none"))
        for t, names in by_target.items():
            if t > 1:
                click.echo(f"faults on target {t}: " + (", ".join(names) if names else "none"))
    sys.exit(0 if all(c.running for c in comps) else 1)


def _target_rows(by_target: dict[int, list[str]]) -> list[dict[str, Any]]:
    from westep_ops.sandbox.state import target_db

    return [{"target": t, "database": target_db(t), "faults": f} for t, f in by_target.items()]


def _target_option(f: Any) -> Any:
    return click.option(
        "--target",
        type=click.IntRange(1, 200),
        default=1,
        show_default=True,
        help="Which target of a fleet sandbox (sandbox up --targets N): 1 is 'postgres',"
        " today's sandbox; T > 1 is database 'westep_tT'.",
    )(f)


@sandbox_group.command("env")
@_sandbox_dir_option
@_target_option
def sandbox_env(sandbox_dir: str | None, target: int) -> None:
    """Print `export` lines pointing westep-ops at the sandbox (they contain its passwords).

    Use: eval "$(westep-ops sandbox env)". With --target T: DATABASE_URL, DIRECT_URL and
    WESTEP_OPS_REPAIR_URL name target T's database; the ops store, pgbouncer consoles and
    keys are the same for every target, and the app and Supabase stand-ins serve target 1
    only (their URLs are printed for every target).
    """
    import shlex

    sb = _sandbox(sandbox_dir)
    env = sb.state.env(target)
    for k, v in env.items():
        click.echo(f"export {k}={shlex.quote(v)}")
    click.echo(f"export WESTEP_OPS_SANDBOX_DIR={shlex.quote(str(sb.layout.root))}")
    if target > 1:
        from westep_ops.sandbox.state import target_db

        click.echo(
            f"# target {target}: the config's databaseName (the pgbouncer pool to watch) is"
            f" {target_db(target)!r}; the app and Supabase stand-ins serve target 1 only"
        )


@sandbox_group.command("targets")
@_sandbox_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def sandbox_targets(sandbox_dir: str | None, as_json: bool) -> None:
    """List the sandbox's targets: number, database (and pgbouncer pool), faults on."""
    from westep_ops.sandbox import faults

    sb = _sandbox(sandbox_dir)
    rows = _target_rows(faults.active_by_target(sb))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(
        _table(
            [[str(r["target"]), r["database"], ", ".join(r["faults"]) or "none"] for r in rows],
            ["target", "database", "faults on"],
        )
    )


@sandbox_group.command("fault")
@_sandbox_dir_option
@click.argument("name")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option(
    "--seconds",
    type=click.FloatRange(1, 3600),
    default=FAULT_SECONDS,
    show_default=True,
    help="Upper bound for faults that hold connections (pool_exhaust, idle_in_tx).",
)
@_target_option
def sandbox_fault(
    sandbox_dir: str | None, name: str, state: str, seconds: float, target: int
) -> None:
    """Inject (on) or undo (off) fault NAME in the sandbox; nothing else is ever touched.

    Faults: pool_pause, pool_exhaust, grant_revoke, orphans, bloat, idle_in_tx, pg_down,
    bouncer_down, api_down, publication_drop. With --target T the database faults act on
    target T's database (pool_pause and pool_exhaust on its pgbouncer pool) only;
    pg_down, bouncer_down and api_down stop a process every target shares and refuse a
    target other than 1.
    """
    from westep_ops.sandbox import faults

    sb = _sandbox(sandbox_dir)
    click.echo(faults.inject(sb, name, state == "on", seconds, target))


@sandbox_group.command("faults")
@_sandbox_dir_option
def sandbox_faults(sandbox_dir: str | None) -> None:
    """List the faults that can be injected and which are on."""
    from westep_ops.sandbox import faults

    sb = _sandbox(sandbox_dir)
    on = set(faults.active(sb)) if sb.exists else set()
    for f in faults.FAULTS.values():
        click.echo(f"{f.name:<18} {'ON ' if f.name in on else '   '} {f.what}")


@click.command("drill")
@click.option(
    "--faults",
    "fault_names",
    default=None,
    help="Comma-separated faults to inject in turn "
    "(default: pool_pause,grant_revoke,orphans,publication_drop,pg_down).",
)
@click.option(
    "--interval",
    type=click.FloatRange(1, 300),
    default=None,
    help="Probe everything every SECONDS, for quick runs "
    "(default: the config's own intervals, monitoring.intervals).",
)
@click.option(
    "--quiet",
    "quiet_s",
    type=click.FloatRange(0, 86400),
    default=None,
    help="Seconds with no fault on before the first fault, between faults and after the "
    "last (0: none; default: 3 cheap-probe intervals).",
)
@click.option(
    "--trials",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="Inject each fault this many times (median and worst are reported per fault).",
)
@target_options
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_context
def drill_cmd(
    ctx: click.Context,
    fault_names: str,
    interval: float | None,
    quiet_s: float | None,
    trials: int,
    target_names: tuple[str, ...],
    tags: tuple[str, ...],
    as_json: bool,
) -> None:
    """Fault drill on the sandbox only: quiet windows and faults in turn, at the config's
    own probe intervals; detection, recovery and false alarms measured.

    Prints per fault and trial: detected (by an alert in a category the fault breaks),
    time from the injection to the alert (and to the first failing sample), time from the
    alert to the verified recovery, repaired automatically or escalated, rows lost (must
    be 0) and rows quarantined; then per fault n, median and worst; then the alerts that
    matched no fault on (false positives), and those inside the quiet windows per quiet
    hour. The ground truth goes into the history, so this month's SLA report judges its
    alerts against it. Progress goes to stderr with --json. Exit code 1 if a fault went
    undetected, rows were lost or an alert matched no fault.

    On one target (--target NAME or --tag k=v; a config without targets has one): its
    variables say which database of the sandbox it watches (sandbox up --targets N), the
    faults are injected there (as sandbox fault NAME on --target T), and the ground truth
    and the incidents judged are that target's. More than one match is an error (exit 2).
    """
    from westep_ops.sandbox import drill
    from westep_ops.sandbox.manager import Sandbox
    from westep_ops.sandbox.state import sandbox_dir

    names = (
        list(drill.DEFAULT_FAULTS)
        if fault_names is None
        else [f.strip() for f in fault_names.split(",") if f.strip()]
    )
    if not names:
        raise click.BadParameter("names no fault", param_hint="'--faults'")
    (target,) = pick_targets(ctx, target_names, tags, one="drill")
    sb = Sandbox(sandbox_dir())
    env = target.environment
    env.require("storage_url")
    _separate_store(env)
    report = drill.run_drill(
        sb,
        env,
        target.config,
        names,
        interval,
        quiet_s=quiet_s,
        trials=trials,
        echo=(lambda s: click.echo(s, err=True)) if as_json else click.echo,
        target=target.name,
        sandbox_target=drill.sandbox_target_of(sb, env) if sb.exists else 1,
    )
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        sys.exit(1 if report.failed else 0)

    def secs(v: float | None) -> str:
        return f"{v} s" if v is not None else "-"

    click.echo(
        _table(
            [
                [
                    r.fault,
                    str(r.trial),
                    "yes" if r.detected else click.style("NO", fg="red"),
                    r.category or "-",
                    secs(r.detect_s),
                    secs(r.first_fail_s),
                    secs(r.recover_s),
                    r.outcome,
                    str(r.rows_lost),
                    str(r.rows_quarantined),
                    str(r.alerts),
                ]
                for r in report.results
            ],
            [
                "fault",
                "trial",
                "detected",
                "category",
                "to alert",
                "to 1st failing",
                "to recover",
                "outcome",
                "rows lost",
                "quarantined",
                "alerts",
            ],
        )
    )
    click.echo(
        "\nper fault (times from the injection; recovery from the alert):\n"
        + _table(
            [
                [
                    s["fault"],
                    str(s["n"]),
                    f"{s['detected']}/{s['n']}",
                    secs(s["detect_s"]["median"]),
                    secs(s["detect_s"]["worst"]),
                    secs(s["recover_s"]["median"]),
                    secs(s["recover_s"]["worst"]),
                    str(s["rows_lost"]),
                    str(s["rows_quarantined"]),
                ]
                for s in drill.summarize(report.results)
            ],
            [
                "fault",
                "n",
                "detected",
                "alert median",
                "alert worst",
                "recover median",
                "recover worst",
                "rows lost",
                "quarantined",
            ],
        )
    )
    t = report.tally
    per_hour = t.per_quiet_hour
    click.echo(
        f"quiet windows: {t.quiet_windows}, {t.quiet_s / 60:.1f} min with no fault on, "
        f"alerts in them: {t.quiet_alerts}"
        + (f" ({per_hour:.2f} per quiet hour)" if per_hour is not None else " (not measured)")
    )
    click.echo(
        f"alerts during the drill: {t.alerts}, matching a fault on: {t.attributed}, "
        f"false positives: {t.false_positives}"
    )
    sys.exit(1 if report.failed else 0)
