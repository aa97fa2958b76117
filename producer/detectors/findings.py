"""A finding: what a detector saw (typed, with its evidence), as stored, read and sent."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from producer.detectors.settings import Detector
from producer.watch_tables import FINDINGS
from shared.errors import UsageError

__all__ = ["Finding", "read_findings"]


@dataclass(frozen=True)
class Finding:
    """One anomaly: which detector, about what (``token:7``, a principal's epoch scope,
    ``client:198.51.100.0/24 curl``, ``region:eu``), a one-line summary and the evidence
    (counts, regions, window). Never a token: ids and 8-hex hash prefixes at most."""

    detector: Detector
    subject: str
    summary: str
    evidence: Mapping[str, Any]
    token_id: int | None = None
    principal: tuple[str, str] | None = None
    at_ms: int = 0
    id: int | None = None
    reaction: str = "alert"
    outcome: str | None = None
    seq: int | None = None
    audit_id: int | None = None
    delivered_at_ms: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (CLI ``--json``, ``GET /v1/findings``, the webhook's body)."""
        return {
            "id": self.id,
            "at_ms": self.at_ms,
            "at": dt.datetime.fromtimestamp(self.at_ms / 1000, dt.UTC).isoformat(
                timespec="seconds"
            ),
            "detector": self.detector.value,
            "subject": self.subject,
            "summary": self.summary,
            "token_id": self.token_id,
            "tokenable_type": self.principal[0] if self.principal else None,
            "tokenable_id": self.principal[1] if self.principal else None,
            "evidence": dict(self.evidence),
            "reaction": self.reaction,
            "outcome": self.outcome,
            "seq": self.seq,
            "audit_id": self.audit_id,
            "delivered_at_ms": self.delivered_at_ms,
        }


def _finding(m: sa.RowMapping) -> Finding:
    principal = (
        (str(m["tokenable_type"]), str(m["tokenable_id"]))
        if m["tokenable_type"] is not None
        else None
    )
    return Finding(
        detector=Detector(m["detector"]),
        subject=str(m["subject"]),
        summary=str(m["summary"]),
        evidence=json.loads(m["evidence"]),
        token_id=m["token_id"],
        principal=principal,
        at_ms=int(m["at_ms"]),
        id=int(m["id"]),
        reaction=str(m["reaction"]),
        outcome=m["outcome"],
        seq=m["seq"],
        audit_id=m["audit_id"],
        delivered_at_ms=m["delivered_at_ms"],
    )


def read_findings(
    engine: sa.Engine,
    *,
    since_ms: int | None = None,
    detector: str | None = None,
    limit: int = 1000,
) -> list[Finding]:
    """Findings, oldest first: since a time, of one detector; at most ``limit`` (the
    newest ones)."""
    if limit < 1:
        raise UsageError("limit must be at least 1")
    query = sa.select(FINDINGS)
    if since_ms is not None:
        query = query.where(FINDINGS.c.at_ms >= since_ms)
    if detector:
        try:
            Detector(detector)
        except ValueError:
            names = ", ".join(d.value for d in Detector)
            raise UsageError(f"unknown detector {detector[:40]!r} (one of {names})") from None
        query = query.where(FINDINGS.c.detector == detector)
    query = query.order_by(FINDINGS.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [_finding(r._mapping) for r in reversed(rows)]
