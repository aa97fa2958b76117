"""The watch: ingests the regions' usage reports into the rolling window, runs the
detectors, and for each new finding writes it (and its audit record), logs it, counts
it, reacts as its detector's policy says and hands it to the webhook.

It runs in the relay process, in the usage reader's thread (``producer.usage``): every
verified batch of usage reports is ingested before ``last_used_at`` moves, so the
dormancy detector sees the time of the previous use, and the issue-rate detector and
the window's pruning run on a timer in the same loop.

Over 350 lines: a finding's one path (store, audit, react, receipt, notify) and the dry
run's planner (``plan_reactions``), which must decide reactions exactly as the watch does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from producer import audit as audit_log
from producer.audit_context import ActorKind, AuditContext
from producer.detectors import rules
from producer.detectors.findings import Finding, read_findings
from producer.detectors.settings import Detector, Reaction, WatchSettings
from producer.detectors.webhook import WebhookNotifier
from producer.models import PAT
from producer.watch_tables import FINDINGS, USAGE_WINDOW
from shared.errors import NotFoundError, TokenSyncError
from shared.events import principal_scope
from shared.logs import get_logger
from shared.metrics import FINDINGS as FINDINGS_METRIC
from shared.metrics import INVALID_PRESENTATIONS
from shared.usage import UsageReport

if TYPE_CHECKING:
    from producer.store import TokenStore
    from shared.settings import Settings

__all__ = ["PlannedRevocation", "Watch", "plan_reactions", "watch_from"]

log = get_logger(__name__)

TICK_S = 30.0
"""How often the issue-rate detector runs and the window is pruned."""


def _window_rows(report: UsageReport) -> Iterable[dict[str, Any]]:
    for token_id, use in report.tokens.items():
        for client, (v, f, d) in use.clients.items():
            yield {
                "token_id": token_id,
                "client": client,
                "hash_prefix": None,
                "valid": v,
                "forbidden": f,
                "denied": d,
                "invalid": 0,
            }
    for token_id in report.usage.keys() - report.tokens.keys():  # a worker before counts
        yield {
            "token_id": token_id,
            "client": "",
            "hash_prefix": None,
            "valid": 1,
            "forbidden": 0,
            "denied": 0,
            "invalid": 0,
        }
    for entry in report.invalid:
        yield {
            "token_id": None,
            "client": entry.client,
            "hash_prefix": entry.prefix,
            "valid": 0,
            "forbidden": 0,
            "denied": 0,
            "invalid": entry.count,
        }


class Watch:
    """Usage window, detectors, findings and reactions over one token store."""

    def __init__(
        self,
        store: TokenStore,
        settings: WatchSettings,
        *,
        receipts: Settings | None = None,
        notifier: WebhookNotifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self._receipts = receipts
        self.notifier = notifier
        self._clock = clock
        self._next_tick = 0.0

    @property
    def _engine(self) -> sa.Engine:
        return self.store.engine

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _on(self, detector: Detector) -> bool:
        return self.settings[detector].enabled

    # --- ingest ------------------------------------------------------------------------
    def ingest(self, reports: Sequence[UsageReport]) -> list[Finding]:
        """Store the reports in the window and raise what the usage detectors find (call
        before ``last_used_at`` moves). Returns the new findings."""
        if not reports:
            return []
        now = self._now_ms()
        ids = {t for r in reports for t in (*r.usage, *r.tokens)}
        with self._engine.begin() as conn:
            prior = rules.priors(conn, ids)
            rows = [
                {"at_ms": r.at_ms, "region": r.region, **row}
                for r in reports
                for row in _window_rows(r)
            ]
            if rows:
                conn.execute(USAGE_WINDOW.insert(), rows)
        for report in reports:
            invalid = sum(i.count for i in report.invalid)
            if invalid:
                INVALID_PRESENTATIONS.labels(report.region).inc(invalid)
        batch = rules.Batch(reports, now, prior)
        found: list[Finding] = []
        with self._engine.connect() as conn:
            if self._on(Detector.MULTI_REGION):
                found += rules.multi_region(conn, batch, self.settings[Detector.MULTI_REGION])
            if self._on(Detector.DORMANT):
                found += rules.dormant(batch, self.settings[Detector.DORMANT])
            if self._on(Detector.AFTER_ROTATION):
                found += rules.after_rotation(conn, batch, self.settings[Detector.AFTER_ROTATION])
            if self._on(Detector.INVALID_BURST):
                found += rules.invalid_burst(conn, batch, self.settings[Detector.INVALID_BURST])
        return self._raise_all(found, now)

    def tick(self, *, force: bool = False) -> list[Finding]:
        """Every TICK_S (or now, with ``force``): the issue-rate detector, and rows older
        than the window leave it."""
        now_s = self._clock()
        if not force and now_s < self._next_tick:
            return []
        self._next_tick = now_s + TICK_S
        now = int(now_s * 1000)
        with self._engine.begin() as conn:
            pruned = conn.execute(
                USAGE_WINDOW.delete().where(
                    USAGE_WINDOW.c.at_ms < now - int(self.settings.window_s * 1000)
                )
            ).rowcount
        if pruned:
            log.info("usage_window_pruned", rows=pruned)
        if not self._on(Detector.PRINCIPAL_JUMP):
            return []
        with self._engine.connect() as conn:
            found = rules.principal_jump(conn, now, self.settings[Detector.PRINCIPAL_JUMP])
        return self._raise_all(found, now)

    # --- raise, react ------------------------------------------------------------------
    def _raise_all(self, found: Iterable[Finding], now: int) -> list[Finding]:
        raised = []
        for finding in found:
            try:
                stored = self._store(replace(finding, at_ms=now))
            except sa.exc.SQLAlchemyError as e:
                log.error("finding_not_stored", detector=finding.detector.value, error=str(e))
                continue
            if stored is None:
                continue
            stored = self._react(stored)
            if self.notifier is not None:
                self.notifier.send(stored)
            raised.append(stored)
        return raised

    def _store(self, finding: Finding) -> Finding | None:
        """Write the finding and its audit record (one transaction); None when the same
        detector found the same subject within its cooldown."""
        cfg = self.settings[finding.detector]
        f = FINDINGS.c
        name = finding.detector.value
        with self._engine.begin() as conn:
            recent = conn.execute(
                sa.select(f.id)
                .where(
                    f.detector == name,
                    f.subject == finding.subject,
                    f.at_ms >= finding.at_ms - cfg.cooldown_ms,
                )
                .limit(1)
            ).first()
            if recent is not None:
                return None
            marker = audit_log.begin(conn)
            audit_id = audit_log.record(
                conn,
                marker,
                AuditContext(ActorKind.PYTHON, f"detector:{name}", finding.summary[:2000]),
                action=f"finding.{name}",
                seq=None,
                scope=finding.subject[:600],
                token_id=finding.token_id,
                principal=finding.principal,
                detail=finding.evidence,
            )
            key = conn.execute(
                FINDINGS.insert().values(
                    at_ms=finding.at_ms,
                    detector=name,
                    subject=finding.subject[:255],
                    token_id=finding.token_id,
                    tokenable_type=finding.principal[0] if finding.principal else None,
                    tokenable_id=finding.principal[1] if finding.principal else None,
                    summary=finding.summary[:600],
                    evidence=_json(finding.evidence),
                    reaction=cfg.reaction.value,
                    audit_id=audit_id,
                )
            ).inserted_primary_key
        stored = replace(
            finding, id=int(key[0]) if key else None, audit_id=audit_id, reaction=cfg.reaction
        )
        FINDINGS_METRIC.labels(name, cfg.reaction.value).inc()
        log.warning(
            "finding_raised",
            finding_id=stored.id,
            detector=name,
            subject=stored.subject,
            summary=stored.summary,
            reaction=cfg.reaction.value,
            evidence=dict(stored.evidence),
        )
        return stored

    def _react(self, finding: Finding) -> Finding:
        reaction = Reaction(finding.reaction)
        if reaction is Reaction.ALERT:
            return self._outcome(finding, "alerted", None)
        audit = AuditContext(
            ActorKind.PYTHON,
            f"detector:{finding.detector.value}",
            f"finding {finding.id}: {finding.summary}"[:2000],
        )
        try:
            if reaction is Reaction.REVOKE_TOKEN:
                target = _token_target(finding)
                if target is None:
                    return self._outcome(finding, "no token to revoke", None)
                try:
                    mutation = self.store.revoke_token(target, audit=audit)
                except NotFoundError:
                    return self._outcome(finding, f"token {target} was already revoked", None)
                what = f"revoked token {target}"
            else:
                if finding.principal is None:
                    return self._outcome(finding, "no principal to revoke", None)
                kind, owner = finding.principal
                mutation = self.store.revoke_principal(kind, owner, audit=audit)
                what = f"revoked principal {kind}:{owner} ({mutation.removed} tokens)"
        except (TokenSyncError, sa.exc.SQLAlchemyError) as e:
            log.error("finding_reaction_failed", finding_id=finding.id, error=str(e))
            return self._outcome(finding, f"reaction failed: {e}"[:600], None)
        log.warning(
            "finding_reaction",
            finding_id=finding.id,
            detector=finding.detector.value,
            reaction=reaction.value,
            outcome=what,
            seq=mutation.seq,
        )
        reacted = self._outcome(finding, what, mutation.seq)
        if self._receipts is not None and mutation.seq:
            threading.Thread(
                target=self._receipt,
                args=(reacted, mutation.seq, mutation.audit_id),
                name="finding-receipt",
                daemon=True,
            ).start()
        return reacted

    def _receipt(self, finding: Finding, seq: int, audit_id: int | None) -> None:
        """Wait for the revocation's receipt, attach it to its audit record and the
        finding's outcome (a thread: the usage loop does not wait)."""
        from producer.audit import attach_complete_receipt
        from producer.receipts import wait_for_receipt

        assert self._receipts is not None
        try:
            receipt = wait_for_receipt(
                self._receipts, self.store, seq, timeout_s=self.settings.receipt_timeout_s
            )
            attach_complete_receipt(self._engine, audit_id, receipt)
            self._outcome(finding, f"{finding.outcome}; {receipt.summary()}"[:600], seq)
            log.info("finding_reaction_receipt", finding_id=finding.id, receipt=receipt.summary())
        except Exception:  # the thread's boundary: the revocation itself stands
            log.exception("finding_receipt_failed", finding_id=finding.id, seq=seq)

    def _outcome(self, finding: Finding, outcome: str, seq: int | None) -> Finding:
        with self._engine.begin() as conn:
            conn.execute(
                FINDINGS.update()
                .where(FINDINGS.c.id == finding.id)
                .values(outcome=outcome, seq=seq)
            )
        return replace(finding, outcome=outcome, seq=seq)


def _token_target(finding: Finding) -> int | None:
    """The token a ``revoke-token`` reaction revokes: the finding's token; after a
    rotation (the old token is dead already) its replacement, which whoever holds the
    leaked old token may hold too."""
    if finding.detector is Detector.AFTER_ROTATION:
        replacement = finding.evidence.get("replacement_id")
        return int(replacement) if isinstance(replacement, int) else None
    return finding.token_id


def _json(evidence: Mapping[str, Any]) -> str:
    import json

    return json.dumps(dict(evidence), sort_keys=True, default=str)


@dataclass(frozen=True)
class PlannedRevocation:
    """What a reaction policy would have done for one stored finding (a dry run)."""

    finding: Finding
    reaction: Reaction
    target: str | None  # token:7, principal:T:1, or None (alert only)
    live: bool  # whether the target still has something to revoke

    def to_json(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "finding": self.finding.to_json(),
            "reaction": self.reaction.value,
            "target": self.target,
            "live": self.live,
        }


def plan_reactions(
    store: TokenStore,
    settings: WatchSettings,
    *,
    since_ms: int,
    policies: Mapping[Detector, Reaction] | None = None,
) -> list[PlannedRevocation]:
    """Dry run: for each finding stored since ``since_ms``, what the reaction policy
    (``policies`` over the settings' own) would revoke, and whether it is still live.
    Every finding is stored whatever its policy (``alert`` too), so this answers "what
    would revoke-token have revoked over the last week"."""
    chosen = {d: settings[d].reaction for d in Detector} | dict(policies or {})
    plans = []
    for finding in read_findings(store.engine, since_ms=since_ms, limit=100_000):
        reaction = chosen[finding.detector]
        target: str | None = None
        live = False
        if reaction is Reaction.REVOKE_TOKEN:
            token_id = _token_target(finding)
            if token_id is not None:
                target = f"token:{token_id}"
                with store.engine.connect() as conn:
                    live = (
                        conn.execute(sa.select(PAT.c.id).where(PAT.c.id == token_id)).first()
                        is not None
                    )
        elif reaction is Reaction.REVOKE_PRINCIPAL and finding.principal is not None:
            kind, owner = finding.principal
            target = principal_scope(kind, owner)
            live = bool(store.list_tokens(kind, owner))
        plans.append(PlannedRevocation(finding, reaction, target, live))
    return plans


def watch_from(settings: Settings, store: TokenStore, watch_settings: WatchSettings) -> Watch:
    """The relay's watch: a started webhook notifier when ``TOKENSYNC_WEBHOOK_URL`` is
    set, receipts for reactions."""
    notifier = None
    if watch_settings.webhook_url and watch_settings.webhook_secret:
        notifier = WebhookNotifier(
            watch_settings.webhook_url,
            watch_settings.webhook_secret,
            store.engine,
            attempts=watch_settings.webhook_attempts,
        ).start()
    enabled = [d.value for d in Detector if watch_settings[d].enabled]
    log.info(
        "watch_started",
        detectors=enabled,
        window_s=watch_settings.window_s,
        webhook=notifier is not None,
    )
    return Watch(store, watch_settings, receipts=settings, notifier=notifier)
