"""The five detectors: each reads one ingested usage batch (or the audit trail) and the
stored usage window, and returns findings; none writes anything (``producer.detectors.
watch`` stores, reacts and notifies).

Over 350 lines: the five detectors side by side, one function each with its query, so
their windows, thresholds and evidence read alike; what runs them is the watch.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import sqlalchemy as sa

from producer.clock import to_ms
from producer.detectors.findings import Finding
from producer.detectors.settings import Detector, DetectorSettings
from producer.models import AUDIT, OUTBOX
from producer.watch_tables import USAGE_WINDOW
from shared.events import principal_scope
from shared.usage import HASH_PREFIX_LENGTH, UsageReport

__all__ = [
    "Batch",
    "Prior",
    "after_rotation",
    "dormant",
    "invalid_burst",
    "multi_region",
    "principal_jump",
]

_CHUNK = 500  # ids per IN list
_BASELINE_S = 7 * 86400.0  # principal_jump compares with the 7 days before its window
_JUMP_FACTOR = 4  # ... and fires at 4x that rate or more


def _iso(at_ms: int | None) -> str | None:
    if at_ms is None:
        return None
    return dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC).isoformat(timespec="seconds")


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


@dataclass(frozen=True)
class Prior:
    """A token as the store knew it before the batch was applied."""

    last_used_ms: int | None
    created_ms: int | None
    principal: tuple[str, str]


@dataclass
class _TokenSeen:
    """One token's presentations across the batch's reports."""

    used: int = 0  # valid + forbidden
    denied: int = 0
    regions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    clients: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    last_at_ms: int = 0


@dataclass(frozen=True)
class Batch:
    """The usage reports the store just verified, when, and what it knew before them."""

    reports: Sequence[UsageReport]
    now_ms: int
    prior: Mapping[int, Prior] = field(default_factory=dict)

    @cached_property
    def tokens(self) -> dict[int, _TokenSeen]:
        """Per token id: presentations, regions, clients (a report without counts, from
        a worker before them, counts each used token once)."""
        seen: dict[int, _TokenSeen] = defaultdict(_TokenSeen)
        for report in self.reports:
            for token_id, use in report.tokens.items():
                entry = seen[token_id]
                for client, (v, f, d) in use.clients.items():
                    entry.used += v + f
                    entry.denied += d
                    if v + f:
                        entry.regions[report.region] += v + f
                    entry.clients[client] += v + f + d
                entry.last_at_ms = max(entry.last_at_ms, report.at_ms)
            for token_id in report.usage.keys() - report.tokens.keys():
                entry = seen[token_id]
                entry.used += 1
                entry.regions[report.region] += 1
                entry.last_at_ms = max(entry.last_at_ms, report.at_ms)
        return dict(seen)


def _top(counts: Mapping[str, int], n: int = 5) -> list[list[object]]:
    return [[k, v] for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def multi_region(conn: sa.Connection, batch: Batch, cfg: DetectorSettings) -> list[Finding]:
    """A token used in ``threshold`` regions or more within the window, when its history
    in the stored window before that had at most one region."""
    ids = sorted(t for t, seen in batch.tokens.items() if seen.used and seen.regions)
    since = batch.now_ms - int(cfg.window_s * 1000)
    recent: dict[int, dict[str, int]] = defaultdict(dict)
    w = USAGE_WINDOW.c
    used = sa.func.sum(w.valid + w.forbidden)
    for chunk in _chunks(ids):
        rows = conn.execute(
            sa.select(w.token_id, w.region, used)
            .where(w.token_id.in_(chunk), w.at_ms >= since)
            .group_by(w.token_id, w.region)
        ).all()
        for token_id, region, n in rows:
            if n:
                recent[int(token_id)][str(region)] = int(n)
    candidates = sorted(t for t, regions in recent.items() if len(regions) >= cfg.threshold)
    history: dict[int, set[str]] = defaultdict(set)
    for chunk in _chunks(candidates):
        history_rows = conn.execute(
            sa.select(w.token_id, w.region)
            .where(w.token_id.in_(chunk), w.at_ms < since, (w.valid + w.forbidden) > 0)
            .group_by(w.token_id, w.region)
        ).all()
        for token_id, region in history_rows:
            history[int(token_id)].add(str(region))
    findings = []
    for token_id in candidates:
        if len(history[token_id]) > 1:
            continue  # a token that is used in several regions anyway
        regions = recent[token_id]
        prior = batch.prior.get(token_id)
        clients = {
            str(c): int(n)
            for c, n in conn.execute(
                sa.select(w.client, used)
                .where(w.token_id == token_id, w.at_ms >= since)
                .group_by(w.client)
            )
        }
        findings.append(
            Finding(
                Detector.MULTI_REGION,
                f"token:{token_id}",
                f"token {token_id} used in {len(regions)} regions"
                f" ({', '.join(sorted(regions))}) within {cfg.window_s:g} s",
                {
                    "regions": regions,
                    "window_s": cfg.window_s,
                    "history_regions": sorted(history[token_id]),
                    "clients": _top(clients),
                },
                token_id=token_id,
                principal=prior.principal if prior else None,
            )
        )
    return findings


def dormant(batch: Batch, cfg: DetectorSettings) -> list[Finding]:
    """A token unused (or never used) for the window or longer that answered
    ``threshold`` requests or more in this batch."""
    findings = []
    for token_id, seen in sorted(batch.tokens.items()):
        prior = batch.prior.get(token_id)
        if prior is None or seen.used < cfg.threshold:
            continue
        reference = prior.last_used_ms if prior.last_used_ms is not None else prior.created_ms
        if reference is None:
            continue
        idle_s = (batch.now_ms - reference) / 1000
        if idle_s < cfg.window_s:
            continue
        findings.append(
            Finding(
                Detector.DORMANT,
                f"token:{token_id}",
                f"token {token_id} active again after {idle_s / 86400:.0f} days unused"
                f" ({seen.used} requests)",
                {
                    "idle_days": round(idle_s / 86400, 1),
                    "last_used_at": _iso(prior.last_used_ms),
                    "created_at": _iso(prior.created_ms),
                    "requests": seen.used,
                    "regions": dict(seen.regions),
                    "clients": _top(seen.clients),
                    "dormant_after_s": cfg.window_s,
                },
                token_id=token_id,
                principal=prior.principal,
            )
        )
    return findings


@dataclass
class _Presented:
    denied: int = 0
    clients: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    last_at_ms: int = 0


def _rotated_presentations(
    conn: sa.Connection, batch: Batch, rotated: Iterable[int]
) -> dict[int, _Presented]:
    """Presentations of rotated tokens in the batch: denied ones by token id (expired
    after a grace), and invalid ones whose hash prefix is a rotated token's (revoked at
    once: a tombstone names no id); the hashes come from the outbox."""
    ids = set(rotated)
    found: dict[int, _Presented] = defaultdict(_Presented)
    for token_id, seen in batch.tokens.items():
        if token_id in ids and seen.denied:
            hit = found[token_id]
            hit.denied += seen.denied
            for client, n in seen.clients.items():
                hit.clients[client] += n
            hit.last_at_ms = max(hit.last_at_ms, seen.last_at_ms)
    if not any(r.invalid for r in batch.reports):
        return found
    by_prefix: dict[str, int] = {}
    o = OUTBOX.c
    for chunk in _chunks(sorted(ids)):
        for token_id, token_hash in conn.execute(
            sa.select(o.token_id, o.token_hash)
            .where(o.token_id.in_(chunk), o.token_hash.is_not(None))
            .distinct()
        ):
            by_prefix[str(token_hash)[:HASH_PREFIX_LENGTH]] = int(token_id)
    for report in batch.reports:
        for use in report.invalid:
            rotated_id = by_prefix.get(use.prefix)
            if rotated_id is not None:
                hit = found[rotated_id]
                hit.denied += use.count
                hit.clients[use.client] += use.count
                hit.last_at_ms = max(hit.last_at_ms, report.at_ms)
    return found


def after_rotation(conn: sa.Connection, batch: Batch, cfg: DetectorSettings) -> list[Finding]:
    """A token rotated within the window, presented ``threshold`` times or more after its
    grace ended (it is revoked or expired by then: these presentations are denied)."""
    a = AUDIT.c
    rotations: dict[int, Any] = {}
    for row in conn.execute(
        sa.select(a.token_id, a.at_ms, a.detail, a.tokenable_type, a.tokenable_id)
        .where(
            a.action == "token.rotate",
            a.token_id.is_not(None),
            a.at_ms >= batch.now_ms - int(cfg.window_s * 1000),
        )
        .order_by(a.id)
    ):
        rotations[int(row.token_id)] = row  # the newest rotation wins
    if not rotations:
        return []
    presented = _rotated_presentations(conn, batch, rotations)
    findings = []
    for token_id, seen in sorted(presented.items()):
        row = rotations[token_id]
        detail = json.loads(str(row.detail)) if row.detail else {}
        grace_s = int(detail.get("grace_seconds", 0))
        grace_end = int(str(row.at_ms)) + grace_s * 1000
        if seen.denied < cfg.threshold or seen.last_at_ms < grace_end:
            continue
        findings.append(
            Finding(
                Detector.AFTER_ROTATION,
                f"token:{token_id}",
                f"token {token_id} presented {seen.denied} times after its rotation's grace"
                f" ended ({_iso(grace_end)})",
                {
                    "denied": seen.denied,
                    "rotated_at": _iso(int(str(row.at_ms))),
                    "grace_seconds": grace_s,
                    "grace_ended_at": _iso(grace_end),
                    "replacement_id": detail.get("replacement_id"),
                    "clients": _top(seen.clients),
                },
                token_id=token_id,
                principal=(str(row.tokenable_type), str(row.tokenable_id))
                if row.tokenable_type is not None
                else None,
            )
        )
    return findings


def invalid_burst(conn: sa.Connection, batch: Batch, cfg: DetectorSettings) -> list[Finding]:
    """``threshold`` invalid presentations or more from one client fingerprint (or
    ``region_threshold`` in one region) within the window, counted in the stored window."""
    clients = sorted({i.client for r in batch.reports for i in r.invalid if i.client})
    regions = sorted({r.region for r in batch.reports if r.invalid})
    if not clients and not regions:
        return []
    since = batch.now_ms - int(cfg.window_s * 1000)
    w = USAGE_WINDOW.c
    invalid = w.token_id.is_(None) & (w.at_ms >= since)
    findings = []
    for client in clients:
        rows = conn.execute(
            sa.select(w.region, w.hash_prefix, sa.func.sum(w.invalid))
            .where(invalid, w.client == client)
            .group_by(w.region, w.hash_prefix)
        ).all()
        total = sum(int(n) for _, _, n in rows)
        if total < cfg.threshold:
            continue
        by_region: dict[str, int] = defaultdict(int)
        prefixes: dict[str, int] = defaultdict(int)
        for region, prefix, n in rows:
            by_region[str(region)] += int(n)
            prefixes[str(prefix)] += int(n)
        findings.append(
            Finding(
                Detector.INVALID_BURST,
                f"client:{client}",
                f"{total} invalid tokens from {client} within {cfg.window_s:g} s",
                {
                    "client": client,
                    "invalid": total,
                    "window_s": cfg.window_s,
                    "regions": dict(by_region),
                    "distinct_prefixes": len(prefixes),
                    "top_prefixes": _top(prefixes),
                },
            )
        )
    for region in regions:
        per_client = conn.execute(
            sa.select(w.client, sa.func.sum(w.invalid))
            .where(invalid, w.region == region)
            .group_by(w.client)
        ).all()
        total = sum(int(n) for _, n in per_client)
        if not cfg.region_threshold or total < cfg.region_threshold:
            continue
        findings.append(
            Finding(
                Detector.INVALID_BURST,
                f"region:{region}",
                f"{total} invalid tokens in region {region} within {cfg.window_s:g} s",
                {
                    "region": region,
                    "invalid": total,
                    "window_s": cfg.window_s,
                    "clients": _top({str(c): int(n) for c, n in per_client}),
                    "distinct_clients": len(per_client),
                },
            )
        )
    return findings


def principal_jump(conn: sa.Connection, now_ms: int, cfg: DetectorSettings) -> list[Finding]:
    """A principal issued ``threshold`` tokens or more within the window, at least four
    times its rate over the seven days before (issues from the audit trail: the store's
    and a Laravel app's alike)."""
    a = AUDIT.c
    window_ms = int(cfg.window_s * 1000)
    since = now_ms - window_ms
    issued = a.action == "token.issue"
    recent = conn.execute(
        sa.select(a.tokenable_type, a.tokenable_id, sa.func.count())
        .where(issued, a.at_ms >= since, a.tokenable_type.is_not(None))
        .group_by(a.tokenable_type, a.tokenable_id)
        .having(sa.func.count() >= cfg.threshold)
    ).all()
    findings = []
    for tokenable_type, tokenable_id, count in recent:
        before = conn.execute(
            sa.select(sa.func.count()).where(
                issued,
                a.tokenable_type == tokenable_type,
                a.tokenable_id == tokenable_id,
                a.at_ms >= since - int(_BASELINE_S * 1000),
                a.at_ms < since,
            )
        ).scalar_one()
        baseline = int(before) * cfg.window_s / _BASELINE_S
        if int(count) < _JUMP_FACTOR * baseline:
            continue
        owner = f"{tokenable_type}:{tokenable_id}"
        findings.append(
            Finding(
                Detector.PRINCIPAL_JUMP,
                principal_scope(str(tokenable_type), str(tokenable_id))[:255],
                f"principal {owner} was issued {count} tokens within {cfg.window_s:g} s"
                f" (usually {baseline:.1f})",
                {
                    "issued": int(count),
                    "window_s": cfg.window_s,
                    "baseline_per_window": round(baseline, 2),
                    "issued_in_7_days_before": int(before),
                },
                principal=(str(tokenable_type), str(tokenable_id)),
            )
        )
    return findings


def priors(conn: sa.Connection, ids: Iterable[int]) -> dict[int, Prior]:
    """The tokens' last use, creation and owner as the store holds them now."""
    from producer.models import PAT

    out: dict[int, Prior] = {}
    p = PAT.c
    for chunk in _chunks(sorted(ids)):
        rows = conn.execute(
            sa.select(p.id, p.last_used_at, p.created_at, p.tokenable_type, p.tokenable_id).where(
                p.id.in_(chunk)
            )
        ).all()
        for row in rows:
            out[int(row.id)] = Prior(
                to_ms(row.last_used_at) if row.last_used_at else None,
                to_ms(row.created_at) if row.created_at else None,
                (str(row.tokenable_type), str(row.tokenable_id)),
            )
    return out
