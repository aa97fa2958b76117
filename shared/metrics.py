"""The Prometheus metrics of every tokensync process, in one catalogue.

Each process exports only what it touches; names are ``tokensync_<part>_<what>``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "APPLY_BATCH_SECONDS",
    "APPLY_RECORDS",
    "DEAD_LETTERS",
    "FINDINGS",
    "INVALID_PRESENTATIONS",
    "REGION_FRESHNESS",
    "REGION_LAG",
    "RELAY_ACTIVE",
    "RELAY_BACKLOG",
    "RELAY_DENIED",
    "RELAY_FENCING_EPOCH",
    "RELAY_LATENCY",
    "RELAY_PUBLISHED",
    "RELAY_QUARANTINED",
    "RELAY_TRIGGERS_MISSING",
    "STAGE_SECONDS",
    "USAGE_REPORTS",
    "WEBHOOK_DELIVERIES",
]

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

RELAY_PUBLISHED = Counter("tokensync_relay_published_records", "Outbox rows published to Kafka.")
RELAY_LATENCY = Histogram(
    "tokensync_relay_commit_to_ack_seconds",
    "From the outbox row's commit to the broker's acknowledgement.",
    buckets=_LATENCY_BUCKETS,
)
RELAY_DENIED = Counter(
    "tokensync_relay_denied_records",
    "Token rows that could not be published as grants and went out as denials of their hash.",
)
RELAY_QUARANTINED = Counter(
    "tokensync_relay_quarantined_records",
    "Outbox rows that could not be published even as denials (no SHA-256 hash); skipped.",
)
RELAY_BACKLOG = Gauge("tokensync_relay_backlog_records", "Outbox rows not yet published.")
RELAY_TRIGGERS_MISSING = Gauge(
    "tokensync_relay_store_triggers_missing",
    "Outbox triggers missing from the token store (0 when all are in place; while not 0 "
    "the relay certifies no heartbeat and regions turn stale).",
)
RELAY_ACTIVE = Gauge(
    "tokensync_relay_active", "1 while this relay holds the relay lease and publishes, else 0."
)
RELAY_FENCING_EPOCH = Gauge(
    "tokensync_relay_fencing_epoch",
    "The fencing epoch of the relay lease this relay holds or last held (0: never held).",
)

APPLY_RECORDS = Counter(
    "tokensync_worker_applied_records", "Records a region worker applied.", ["region", "outcome"]
)
APPLY_BATCH_SECONDS = Histogram(
    "tokensync_worker_batch_seconds",
    "Time to apply one batch to Redis.",
    ["region"],
    buckets=_LATENCY_BUCKETS,
)
DEAD_LETTERS = Counter(
    "tokensync_worker_dead_letters", "Records sent to the dead-letter topic.", ["region", "reason"]
)
SEAL_GATE = Counter(
    "tokensync_worker_seal_gate",
    "What a sealed region's seal gate saw: seals verified (sealed), seals by a retired key"
    " ignored (retired_seals), records dead-lettered for want of a seal (unsealed),"
    " heartbeats no seal covered (unsealed_heartbeats), records a later seal released"
    " after their dead letter (late), waiting records a newer sealed version replaced"
    " (superseded).",
    ["region", "event"],
)
REGION_LAG = Gauge("tokensync_region_lag_records", "Records not yet applied.", ["region"])
REGION_FRESHNESS = Gauge(
    "tokensync_region_freshness_seconds", "Age of the oldest partition heartbeat.", ["region"]
)
STAGE_SECONDS = Histogram(
    "tokensync_stage_seconds",
    "Time a record spent in each stage (outbox, relay_read, relay_sign, relay_ack; per "
    "region: kafka, verify, apply); observed once per batch, only while tracing or "
    "stage timing is on (the record needs the relay's stamps).",
    ["stage", "region"],
    buckets=(0.0005, *_LATENCY_BUCKETS),
)
USAGE_REPORTS = Counter(
    "tokensync_usage_reports",
    "Usage reports from regions the store received: applied, or dropped as forged,"
    " malformed or out_of_range (no region label: a forged record names any region).",
    ["outcome"],
)

FINDINGS = Counter(
    "tokensync_findings",
    "Findings the watch's detectors raised (page on its rate), by detector and reaction.",
    ["detector", "reaction"],
)
INVALID_PRESENTATIONS = Counter(
    "tokensync_usage_invalid_presentations",
    "Invalid token presentations the regions reported (unknown, malformed), by region.",
    ["region"],
)
WEBHOOK_DELIVERIES = Counter(
    "tokensync_webhook_deliveries",
    "Finding deliveries to the webhook: delivered, retried (one per failed attempt), failed.",
    ["outcome"],
)
