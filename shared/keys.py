"""The one place that spells Kafka topic names, consumer groups and Redis keys.

Every Redis key lives under a namespace (default ``ts``) so that tests and
several deployments can share one Redis server. The two Lua scripts
(``workers/apply.lua``, ``shared/validate.lua``) receive these names as KEYS;
``validate.lua`` names epoch *fields* (scopes) itself, as ``shared.events`` spells them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "PRESENT_FIELD",
    "SIGNERS_FRESH_S",
    "SIGNERS_REFRESH_S",
    "RedisKeys",
    "Topics",
    "consumer_group",
]

# A field that a worker writes into the epochs and partitions hashes when it starts a
# generation: a hash without it was evicted or deleted, never "empty" (``validate.lua`` and
# ``apply.lua`` spell it too).
PRESENT_FIELD = "~present"

# Workers refresh their entry of ``RedisKeys.signers`` this often; an entry older than
# ``SIGNERS_FRESH_S`` belongs to a worker that stopped (doctor ignores it, workers drop it).
SIGNERS_REFRESH_S = 5.0
SIGNERS_FRESH_S = 30.0


@dataclass(frozen=True)
class Topics:
    """Kafka topic names, dotted and versioned under a prefix (default ``tokensync``)."""

    prefix: str = "tokensync"

    @property
    def tokens(self) -> str:
        """The compacted stream of token and epoch records, and heartbeats."""
        return f"{self.prefix}.tokens.v1"

    @property
    def dead_letters(self) -> str:
        """Records a worker refused to apply, with the reason in a header."""
        return f"{self.prefix}.deadletter.v1"

    @property
    def usage(self) -> str:
        """Batches of last-used times that validators flush for the store."""
        return f"{self.prefix}.usage.v1"


def consumer_group(region: str, prefix: str = "tokensync") -> str:
    """The consumer group of one region's workers: ``tokensync-<region>``."""
    return f"{prefix}-{region}"


@dataclass(frozen=True)
class RedisKeys:
    """Redis key names of one region's cache."""

    namespace: str = "ts"

    def token(self, token_hash: str) -> str:
        """Hash of one token's fields (owner, abilities, times, version, state)."""
        return f"{self.namespace}:tok:{token_hash}"

    def token_id(self, token_id: int) -> str:
        """Maps a Sanctum row id to its token hash (for ``id|`` lookups)."""
        return f"{self.namespace}:tid:{token_id}"

    @property
    def epochs(self) -> str:
        """Hash of revocation epochs: scope -> ms; tokens of the scope issued before it are
        revoked (scopes: ``global``, ``principal:<type>:<id>``, ``ability:<name>``)."""
        return f"{self.namespace}:epochs"

    @property
    def meta(self) -> str:
        """Region metadata: ``generation`` (the cache's identity; gone = rebuild from 0),
        ``cluster``/``topic`` (the stream it was built from), ``partitions``, ``ready``,
        ``hb_min`` (oldest partition heartbeat), bootstrap progress and counters."""
        return f"{self.namespace}:meta"

    @property
    def signers(self) -> str:
        """Hash of worker instance id -> JSON ``{"kids": [...], "t": ms}``: the signing key
        ids each worker of this region verifies with, refreshed every
        ``SIGNERS_REFRESH_S`` (``t`` is the region's Redis ``TIME``); ``tokensync doctor`` compares
        them with the relay's keyring. Kept apart from ``meta``, which a rebuild drops."""
        return f"{self.namespace}:signers"

    @property
    def partitions(self) -> str:
        """Per-partition applied next offsets (``o:<p>``), newest heartbeats (``h:<p>``),
        bootstrap targets (``t:<p>``) and the generation's ``~present`` marker."""
        return f"{self.namespace}:parts"

    @property
    def dead_lettered(self) -> str:
        """Sorted set of every record a worker of this region dead-lettered: member
        ``"<partition>:<offset>"``, score the record's ``seq`` when its JSON names one (read
        even from an unverified record, as a hint; never a heartbeat's) else -1. Written in
        the same Lua call as the batch around it, so a receipt that finds its seq here knows
        the region did not apply it. Signed token records that fail only the shape limits
        are applied as denials and are not listed. A new generation starts it empty."""
        return f"{self.namespace}:dlq"

    @property
    def invalidations(self) -> str:
        """Pub/sub channel: what each applied batch changed (near-caches listen)."""
        return f"{self.namespace}:inval"

    @property
    def near_caches(self) -> str:
        """Hash of near-cache id -> JSON ``{"t": ms, "l": ms}``: the Redis time of the newest
        ping that near-cache has processed (every invalidation published before ``t`` is
        applied there) and its answer bound ``l`` (see ``shared.nearcache``)."""
        return f"{self.namespace}:nearcaches"

    @property
    def usage(self) -> str:
        """Hash of token id -> newest use (ms) that validators flush and workers forward."""
        return f"{self.namespace}:usage"

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key of this namespace."""
        return f"{self.namespace}:*"
