"""``tokensync findings`` (what the detectors found, and what a reaction policy would have
revoked) and ``tokensync watch`` (a live view of usage, invalid rates and findings)."""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from producer.cli_support import Command, open_store
from shared.cli import CliContext, emit, json_option, pass_cli
from shared.errors import UsageError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from producer.detectors import Detector, Reaction

__all__ = ["findings", "snapshot", "watch"]


def _when(at_ms: int) -> str:
    return dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _policies(pairs: tuple[str, ...]) -> dict[Detector, Reaction]:
    from producer.detectors import Detector, Reaction

    out: dict[Detector, Reaction] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            out[Detector(name.strip().replace("-", "_"))] = Reaction(value.strip())
        except ValueError:
            detectors = ", ".join(d.value for d in Detector)
            reactions = ", ".join(r.value for r in Reaction)
            raise UsageError(
                f"--policy {pair[:60]!r}: DETECTOR=REACTION with a detector of {detectors}"
                f" and a reaction of {reactions}"
            ) from None
        if not sep:
            raise UsageError(f"--policy {pair[:60]!r} must be DETECTOR=REACTION")
    return out


@click.command(
    cls=Command,
    epilog="\b\nExamples:\n"
    "  tokensync findings --since 1d\n"
    "  tokensync findings --detector dormant --json\n"
    "  tokensync findings --since 7d --dry-run --policy dormant=revoke-token",
)
@click.option("--since", default="1d", show_default=True, help="90s/15m/1h/7d, or a time.")
@click.option("--detector", default=None, help="Only this detector's findings.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Show what the reaction policy would have revoked for these findings (revokes nothing).",
)
@click.option(
    "--policy",
    "policies",
    multiple=True,
    metavar="DETECTOR=REACTION",
    help="With --dry-run: a reaction to assume (alert, revoke-token, revoke-principal).",
)
@json_option
@pass_cli
def findings(
    cli: CliContext,
    *,
    since: str,
    detector: str | None,
    limit: int,
    dry_run: bool,
    policies: tuple[str, ...],
    as_json: bool,
) -> None:
    """What the detectors found: anomalous token use, invalid bursts, issue-rate jumps."""
    from producer.audit import parse_since
    from producer.detectors import plan_reactions, read_findings

    if policies and not dry_run:
        raise UsageError("--policy only applies with --dry-run")
    chosen = _policies(policies)
    since_ms = parse_since(since)
    store = open_store(cli)
    if dry_run:
        settings = cli.settings.watch
        plans = plan_reactions(store, settings, since_ms=since_ms, policies=chosen)
        if detector:
            plans = [p for p in plans if p.finding.detector.value == detector]
        revoking = [p for p in plans if p.target and p.live]
        lines = [
            f"{_when(p.finding.at_ms)}  #{p.finding.id:<5} {p.finding.detector.value:<15}"
            f" {p.reaction.value:<16} "
            + (
                f"would revoke {p.target}"
                if p.target and p.live
                else f"{p.target} (nothing live to revoke)"
                if p.target
                else "alert only"
            )
            for p in plans
        ]
        lines.append(
            f"dry run: {len(revoking)} of {len(plans)} findings would revoke something;"
            " nothing was revoked"
        )
        emit(as_json, [p.to_json() for p in plans], lines)
        return
    found = read_findings(store.engine, since_ms=since_ms, detector=detector, limit=limit)
    lines = [
        f"{_when(f.at_ms)}  #{f.id:<5} {f.detector.value:<15} {f.summary}"
        + (f"  -> {f.outcome}" if f.outcome and f.outcome != "alerted" else "")
        for f in found
    ]
    emit(as_json, [f.to_json() for f in found], lines or f"no findings since {since}")


def snapshot(engine: sa.Engine, now_ms: int, window_s: float = 300.0) -> dict[str, Any]:
    """What ``tokensync watch`` shows: top tokens by requests, invalid rates per region
    (both over the last ``window_s``), and the newest findings."""
    import sqlalchemy as sa

    from producer.detectors import read_findings
    from producer.watch_tables import USAGE_WINDOW

    w = USAGE_WINDOW.c
    since = now_ms - int(window_s * 1000)
    requests = sa.func.sum(w.valid + w.forbidden + w.denied)
    with engine.connect() as conn:
        top = conn.execute(
            sa.select(w.token_id, requests, sa.func.count(sa.distinct(w.region)))
            .where(w.at_ms >= since, w.token_id.is_not(None))
            .group_by(w.token_id)
            .order_by(requests.desc())
            .limit(10)
        ).all()
        regions = conn.execute(
            sa.select(
                w.region, sa.func.sum(w.valid + w.forbidden + w.denied), sa.func.sum(w.invalid)
            )
            .where(w.at_ms >= since)
            .group_by(w.region)
            .order_by(w.region)
        ).all()
    recent = read_findings(engine, since_ms=now_ms - 86_400_000, limit=10)
    return {
        "at": _when(now_ms),
        "window_s": window_s,
        "top_tokens": [
            {"token_id": int(t), "requests": int(n or 0), "regions": int(r)} for t, n, r in top
        ],
        "regions": [
            {
                "region": str(name),
                "requests": int(ok or 0),
                "invalid": int(bad or 0),
                "invalid_rate": round(int(bad or 0) / max(1, int(ok or 0) + int(bad or 0)), 4),
            }
            for name, ok, bad in regions
        ],
        "findings": [f.to_json() for f in reversed(recent)],
    }


def _render(data: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table

    tokens = Table(title=f"top tokens, last {data['window_s']:g} s", expand=True)
    for column in ("token", "requests", "regions"):
        tokens.add_column(column, justify="right" if column != "token" else "left")
    for t in data["top_tokens"]:
        tokens.add_row(str(t["token_id"]), str(t["requests"]), str(t["regions"]))
    regions = Table(title="regions", expand=True)
    for column in ("region", "requests", "invalid", "invalid rate"):
        regions.add_column(column, justify="right" if column != "region" else "left")
    for r in data["regions"]:
        style = "bold red" if r["invalid_rate"] >= 0.1 else None
        regions.add_row(
            r["region"],
            str(r["requests"]),
            str(r["invalid"]),
            f"{r['invalid_rate']:.1%}",
            style=style,
        )
    found = Table(title="findings (newest first, last 24 h)", expand=True)
    for column in ("at", "#", "detector", "summary", "outcome"):
        found.add_column(column)
    for f in data["findings"]:
        found.add_row(f["at"], str(f["id"]), f["detector"], f["summary"], f["outcome"] or "")
    return Group(tokens, regions, found)


@click.command(
    cls=Command,
    epilog="\b\nExamples:\n"
    "  tokensync watch\n"
    "  tokensync watch --window 15m --every 5\n"
    "  tokensync watch --json",
)
@click.option("--window", default="5m", show_default=True, help="How far back the usage counts.")
@click.option(
    "--every", type=click.FloatRange(0.2, 3600), default=2.0, show_default=True, help="Seconds."
)
@json_option
@pass_cli
def watch(cli: CliContext, *, window: str, every: float, as_json: bool) -> None:
    """A live view: top tokens by requests, invalid rates per region, findings as they
    arrive. Ctrl-C exits; piped (or with --json) it prints one snapshot."""
    from shared.timeparse import parse_duration

    window_s = parse_duration(window)
    store = open_store(cli)
    data = snapshot(store.engine, int(time.time() * 1000), window_s)
    if as_json:
        emit(True, data, "")
        return
    from rich.console import Console

    console = Console()
    if not sys.stdout.isatty():
        console.print(_render(data))
        return
    from rich.live import Live

    try:
        with Live(_render(data), console=console, refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(every)
                live.update(_render(snapshot(store.engine, int(time.time() * 1000), window_s)))
    except KeyboardInterrupt:
        console.print("stopped")
