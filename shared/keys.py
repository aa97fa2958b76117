"""The one catalogue of the region schema: topics, Redis keys, hash fields, messages.

Every Redis key lives under a namespace (default ``ts``) so that tests and
several deployments can share one Redis server. Every hash field, field value
and message field a region's Redis holds or carries is spelled here: Python
modules name them through these classes, never as literals (a test greps for
that). The Lua scripts (``shared/*.lua``, ``workers/*.lua``) receive the key
names as KEYS and spell the fields themselves, for speed and readability; a test
(``tests/unit/test_redis_schema.py``) parses every script and proves that each
name it spells is catalogued here and that each catalogued name a script must
know is spelled by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEAD_LETTER_NO_SEQ",
    "PRESENT_FIELD",
    "SIGNERS_FRESH_S",
    "SIGNERS_REFRESH_S",
    "EpochScope",
    "InvalidationField",
    "MetaField",
    "NearCacheField",
    "PartitionField",
    "PingField",
    "PingKind",
    "RedisKeys",
    "SignerField",
    "TokenField",
    "TokenState",
    "Topics",
    "consumer_group",
    "dead_letter_member",
    "parse_dead_letter_member",
]

# A field that a worker writes into the epochs and partitions hashes when it starts a
# generation: a hash without it was evicted or deleted, never "empty".
PRESENT_FIELD: Final = "~present"


class TokenField:
    """Fields of a token hash (``RedisKeys.token``): ``apply.lua`` writes them,
    ``validate.lua`` reads them. A tombstone holds only the version, state and expiry."""

    VERSION: Final = "v"  # the outbox seq of the record applied (compare-and-set)
    STATE: Final = "s"  # ``TokenState``
    ID: Final = "id"  # Sanctum's row id ("" when the record named none)
    TOKENABLE_TYPE: Final = "tt"
    TOKENABLE_ID: Final = "ti"
    NAME: Final = "n"
    ABILITIES: Final = "ab"  # JSON list
    CREATED_AT: Final = "ca"  # ms
    ISSUED_AT: Final = "ia"  # ms: what epochs compare with
    EXPIRES_AT: Final = "ea"  # ms, "" = never


class TokenState:
    """Values of ``TokenField.STATE``."""

    LIVE: Final = "l"
    REVOKED: Final = "r"  # a tombstone: refuses older records replayed later


class MetaField:
    """Fields of a region's meta hash (``RedisKeys.meta``)."""

    GENERATION: Final = "generation"  # the cache's identity; gone = rebuild from offset 0
    BUILDING: Final = "building"  # keys purged so far while a new generation clears the namespace
    READY: Final = "ready"  # ``YES`` once every partition reached its bootstrap target
    READY_AT: Final = "ready_at"  # ms
    APPLIED: Final = "applied"  # records applied by this generation
    CLUSTER: Final = "cluster"  # Kafka cluster id the cache was built from
    TOPIC: Final = "topic"  # ... and topic name
    TOPIC_ID: Final = "topic_id"  # ... and the topic incarnation's id ("" = unknown)
    PARTITIONS: Final = "partitions"  # the topic's partition count
    OLDEST_HEARTBEAT: Final = "hb_min"  # ms; absent while a partition has none
    BOOT_LOADED: Final = "boot_loaded"  # bootstrap progress: records loaded ...
    BOOT_TOTAL: Final = "boot_total"  # ... of this many
    RATE: Final = "rate"  # recent apply rate, records/s (written by the worker, not Lua)
    # the replication id (INFO replication master_replid) of the server the worker applied
    # to: a promoted replica or a restarted primary has another one (it may have regressed)
    SERVER: Final = "replid"
    YES: Final = "1"  # the value of a set flag (``READY``)


class PartitionField:
    """Field prefixes of the partitions hash (``RedisKeys.partitions``), each followed by a
    partition number, besides ``PRESENT_FIELD``."""

    OFFSET: Final = "o:"  # the next offset to apply
    HEARTBEAT: Final = "h:"  # the newest heartbeat applied (ms, the relay's stamp)
    TARGET: Final = "t:"  # the bootstrap target: the end offset when the generation began

    @staticmethod
    def offset(partition: int) -> str:
        """The field of a partition's next offset."""
        return f"{PartitionField.OFFSET}{partition}"

    @staticmethod
    def heartbeat(partition: int) -> str:
        """The field of a partition's newest heartbeat."""
        return f"{PartitionField.HEARTBEAT}{partition}"

    @staticmethod
    def target(partition: int) -> str:
        """The field of a partition's bootstrap target."""
        return f"{PartitionField.TARGET}{partition}"

    @staticmethod
    def parse(name: str) -> tuple[str, int] | None:
        """``(prefix, partition)`` of a per-partition field name, or None (the presence
        marker, or anything else)."""
        for prefix in (PartitionField.OFFSET, PartitionField.HEARTBEAT, PartitionField.TARGET):
            number = name[len(prefix) :]
            if name.startswith(prefix) and number.isdigit() and number.isascii():
                return prefix, int(number)
        return None


class EpochScope:
    """Fields of the epochs hash (``RedisKeys.epochs``): revocation scopes
    (``shared.events`` builds them; ``validate.lua`` asks for those of a token)."""

    GLOBAL: Final = "global"
    PRINCIPAL: Final = "principal:"  # + ``<tokenable_type>:<tokenable_id>``
    PRINCIPAL_SEPARATOR: Final = ":"  # between a principal's type and id
    ABILITY: Final = "ability:"  # + the ability, literally


class InvalidationField:
    """Fields of the JSON message ``apply.lua`` publishes on ``RedisKeys.invalidations``
    after every batch (also an empty one). It carries no ``PingField.KIND``."""

    GENERATION: Final = "g"  # the cache generation that applied the batch
    TOKEN_KEYS: Final = "h"  # noqa: S105 (a field name) the token keys that changed (absent: none)
    EPOCH_MOVED: Final = "e"  # 1: an epoch moved, or too many keys to list: drop everything


class PingKind:
    """Values of ``PingField.KIND``."""

    PING: Final = "ping"  # a near-cache's own ping, on its own channel
    SYNC: Final = "sync"  # a receipt asking every near-cache to report


class PingField:
    """Fields of the JSON ping ``shared/ping.lua`` publishes (Redis's time with the
    region's state, in one atomic step)."""

    KIND: Final = "k"  # ``PingKind``
    ID: Final = "id"  # the near-cache that sent it ("" for a sync)
    NUMBER: Final = "n"  # the sender's ping number
    TIME: Final = "t"  # Redis TIME, ms
    OLDEST_HEARTBEAT: Final = "hb"  # ``MetaField.OLDEST_HEARTBEAT`` (-1: none)
    READY: Final = "r"  # 1 if the region is ready
    GENERATION: Final = "g"  # ``MetaField.GENERATION`` ("" = none)


class NearCacheField:
    """Fields of a near-cache's JSON entry in ``RedisKeys.near_caches``."""

    REPORTED: Final = "t"  # the Redis time of the newest ping it has processed (0 = none)
    SINCE: Final = "s"  # the Redis time it registered
    BOUND: Final = "l"  # its answer bound, ms


class SignerField:
    """Fields of a worker's JSON entry in ``RedisKeys.signers``."""

    KEY_IDS: Final = "kids"  # the signing key ids it verifies with
    TIME: Final = "t"  # the region's Redis TIME when it wrote the entry, ms


#: The score of a dead letter whose record names no (readable) seq.
DEAD_LETTER_NO_SEQ: Final = -1


def dead_letter_member(partition: int, offset: int) -> str:
    """The member of ``RedisKeys.dead_lettered`` for the record at partition/offset."""
    return f"{partition}:{offset}"


def parse_dead_letter_member(member: bytes | str) -> tuple[int, int] | None:
    """``(partition, offset)`` of a dead-letter member, or None if it is not one."""
    text = member.decode("utf-8", "replace") if isinstance(member, bytes) else member
    partition, _, offset = text.partition(":")
    if partition.isdigit() and offset.isdigit() and partition.isascii() and offset.isascii():
        return int(partition), int(offset)
    return None


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
        """Hash of one token's fields (``TokenField``): owner, abilities, times, version,
        state (``TokenState``)."""
        return f"{self.namespace}:tok:{token_hash}"

    @property
    def epochs(self) -> str:
        """Hash of revocation epochs: scope (``EpochScope``) -> ms; tokens of the scope
        issued before it are revoked; and the generation's ``PRESENT_FIELD`` marker."""
        return f"{self.namespace}:epochs"

    @property
    def meta(self) -> str:
        """Region metadata (``MetaField``): the generation (the cache's identity; gone =
        rebuild from 0), the stream it was built from, partitions, ready, the oldest
        partition heartbeat, bootstrap progress and counters."""
        return f"{self.namespace}:meta"

    @property
    def signers(self) -> str:
        """Hash of worker instance id -> JSON (``SignerField``): the signing key ids each
        worker of this region verifies with and when (the region's Redis ``TIME``),
        refreshed every ``SIGNERS_REFRESH_S``; ``tokensync doctor`` compares them with the
        relay's keyring. Kept apart from ``meta``, which a rebuild drops."""
        return f"{self.namespace}:signers"

    @property
    def partitions(self) -> str:
        """Per-partition applied next offsets, newest heartbeats and bootstrap targets
        (``PartitionField``), and the generation's ``PRESENT_FIELD`` marker."""
        return f"{self.namespace}:parts"

    @property
    def dead_lettered(self) -> str:
        """Sorted set of every record a worker of this region dead-lettered: member
        ``dead_letter_member(partition, offset)``, score the record's ``seq`` when its JSON
        names one (read even from an unverified record, as a hint; never a heartbeat's)
        else ``DEAD_LETTER_NO_SEQ``. Written in the same Lua call as the batch around it,
        so a receipt that finds its seq here knows the region did not apply it. Signed
        token records that fail only the shape limits are applied as denials and are not
        listed. A new generation starts it empty."""
        return f"{self.namespace}:dlq"

    @property
    def invalidations(self) -> str:
        """Pub/sub channel: what each applied batch changed (``InvalidationField``), and
        receipts' sync pings (``PingField``); near-caches listen. Each near-cache also
        hears its own pings on ``<channel>:<near-cache id>``."""
        return f"{self.namespace}:inval"

    @property
    def near_caches(self) -> str:
        """Hash of near-cache id -> JSON (``NearCacheField``): the Redis time of the newest
        ping that near-cache has processed (every invalidation published before it is
        applied there) and its answer bound (see ``shared.nearcache``)."""
        return f"{self.namespace}:nearcaches"

    @property
    def usage(self) -> str:
        """Hash of token id -> newest use (ms) that validators flush and workers forward."""
        return f"{self.namespace}:usage"

    @property
    def stages(self) -> str:
        """Debug hash of seq -> stage stamps (``shared.stages``), written by workers only
        while ``TOKENSYNC_STAGE_TIMING`` is on; it expires on its own."""
        return f"{self.namespace}:debug:stages"

    @property
    def usage_counts(self) -> str:
        """Hash of presentation counters validators flush beside ``usage`` (``v|id|client``,
        ``f|...``, ``d|...``, ``i|client|hash prefix`` -> count; ``shared.usage``)."""
        return f"{self.namespace}:usage:counts"

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key of this namespace."""
        return f"{self.namespace}:*"
