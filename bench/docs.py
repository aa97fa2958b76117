"""Render docs/benchmarks.md's figures from bench/results/*.json (``tokensync bench docs``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report import RESULTS

__all__ = ["render"]

DOC = Path("docs/benchmarks.md")
START, END = "<!-- figures:start -->", "<!-- figures:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _hit(ok: bool) -> str:
    return "hit" if ok else "**miss**"


def figures() -> str:
    """The markdown of every available scenario's figures against DESIGN.md's targets."""
    rows = ["| what | target | measured | |", "| --- | --- | --- | --- |"]
    machine = ""
    if (v := _load("validate")) is not None:
        machine = (
            f"{v['machine']['cpu']}, {v['machine']['cores']} cores, Python {v['machine']['python']}"
        )
        r, s = v["ratios"], v["stats"]
        rows.append(
            f"| validation p50 vs bare Redis GET (same process) | ≤ 1.3x | "
            f"{r['validator_p50_over_get_p50']:.2f}x ({s['validator']['p50'] * 1000:.0f} µs vs "
            f"{s['redis GET (baseline)']['p50'] * 1000:.0f} µs) | "
            f"{_hit(r['validator_p50_over_get_p50'] <= 1.3)} |"
        )
        rows.append(
            f"| validations/s vs the Sanctum way, no near-cache | ≥ 3x | "
            f"{r['validator_throughput_over_sanctum']:.1f}x "
            f"({s['validator']['ops_per_s']:,.0f}/s vs "
            f"{s['Sanctum way (PostgreSQL)']['ops_per_s']:,.0f}/s) | "
            f"{_hit(r['validator_throughput_over_sanctum'] >= 3)} |"
        )
        rows.append(
            f"| validations/s vs the Sanctum way, near-cache | ≥ 100x | "
            f"{r['near_cache_throughput_over_sanctum']:.0f}x "
            f"({s['validator + near-cache']['ops_per_s']:,.0f}/s) | "
            f"{_hit(r['near_cache_throughput_over_sanctum'] >= 100)} |"
        )
    if (p := _load("propagation")) is not None:
        for kind, label in (("token", "one token"), ("epoch", "one epoch (principal)")):
            per = p["stats"][kind]
            p50 = max(x["p50"] for x in per.values())
            p99 = max(x["p99"] for x in per.values())
            n = min(x["n"] for x in per.values())
            rows.append(
                f"| revoke → denied in all 3 regions, {label} | p50 ≤ 8 ms, p99 ≤ 25 ms | "
                f"worst region p50 {p50:.1f} ms, p99 {p99:.1f} ms ({n} samples per region, "
                f"{p['store']} store) | {_hit(p50 <= 8 and p99 <= 25)} |"
            )
    if (a := _load("apply")) is not None:
        rows.append(
            f"| worker apply rate, one region | ≥ 100k records/s | "
            f"{a['records_per_s']:,.0f} records/s ({a['records']:,} records) | "
            f"{_hit(a['records_per_s'] >= 100_000)} |"
        )
    if (b := _load("bootstrap")) is not None:
        rows.append(
            f"| new region, {b['records']:,} live tokens, to ready | ≤ 20 s | "
            f"{b['process_start_to_ready_s']:.1f} s from process start | "
            f"{_hit(b['process_start_to_ready_s'] <= 20)} |"
        )
    if (k := _load("bulk")) is not None:
        rows.append(
            f"| {k['tokens']:,} per-token revocations, enforced everywhere | ≤ 5 s | "
            f"{k['enforced_everywhere_s']:.1f} s "
            f"(relay {k['relay_records_per_s']:,.0f} records/s) | "
            f"{_hit(k['enforced_everywhere_s'] <= 5)} |"
        )
    if (g := _load("gate")) is not None:
        gs, gr = g["stats"], g["ratios"]
        gate8, sanctum8 = gs["gate /auth"]["8"], gs["Sanctum way (PostgreSQL)"]["8"]
        uvicorn8 = gs["uvicorn ASGI /auth (baseline)"]["8"]
        rows.append(
            f"| gate `/auth` over HTTP, 8 keep-alive connections | p50 ≤ 1 ms, ≥ 2x the "
            f"Sanctum way | p50 {gate8['p50']:.2f} ms, {gate8['rps']:,.0f} req/s = "
            f"{gr['gate_rps_over_sanctum_at_8']:.1f}x the Sanctum way ({sanctum8['rps']:,.0f}/s),"
            f" {gr['gate_rps_over_uvicorn_at_8']:.1f}x uvicorn ({uvicorn8['rps']:,.0f}/s) | "
            f"{_hit(gate8['p50'] <= 1.0 and gr['gate_rps_over_sanctum_at_8'] >= 2)} |"
        )
    head = f"Machine: {machine}.\n\n" if machine else ""
    return head + "\n".join(rows) + _wan()


def _wan() -> str:
    w = _load("wan")
    if w is None:
        return ""
    rows = [
        "",
        "",
        "Regions at a distance (`tokensync bench wan`; one-way delay to Kafka and the store):",
        "",
        "| region | one-way | local validator p50 | near-cache p50 | Sanctum way p50 | "
        "Sanctum / local | revoke -> denied p50 / p99 | epoch p50 | back-to-back p50 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, delay in w["delays_s"].items():
        v, t, e = w["validation"][name], w["revoke"]["token"][name], w["revoke"]["epoch"][name]
        burst = w["revoke"].get("burst", {}).get(name)  # measured since the random pauses
        back_to_back = "-" if burst is None else f"{burst['p50']:.1f} ms"
        rows.append(
            f"| {name} | {delay * 1000:.0f} ms | {v['local validator']['p50']:.3f} ms | "
            f"{v['near-cache']['p50']:.3f} ms | {v['Sanctum way']['p50']:.1f} ms | "
            f"{v['sanctum_p50_over_local_p50']:,.0f}x | {t['p50']:.1f} / {t['p99']:.1f} ms | "
            f"{e['p50']:.1f} ms | {back_to_back} |"
        )
    return "\n".join(rows)


def render() -> Path:
    """Replace the figures block of docs/benchmarks.md."""
    text = DOC.read_text()
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    DOC.write_text(f"{before}{START}\n{figures()}\n{END}{after}")
    return DOC
