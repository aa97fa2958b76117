"""``tokensync doctor``: does this deployment keep tokensync's guarantees?

Each check answers pass, warn or fail, with what it saw and the fix. Checks:
the outbox triggers on the token table; the store's clock against this host's and
(MySQL) the server's time zone and the DROP privilege of the database user (TRUNCATE
fires no trigger on MySQL); the relay's backlog; each region's Redis
``maxmemory-policy`` (only ``noeviction`` cannot silently un-revoke) and persistence;
each region ready and fresh; each region's clock (Redis ``TIME``) against the store's;
the signing key ids each region's workers verify with against this keyring (the relay's);
the token topic's ``cleanup.policy``, replication factor and ``min.insync.replicas``.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import sqlalchemy as sa

from producer import triggers_mysql
from producer.outbox import db_now_ms, oldest_unpublished_ms, unpublished_count
from producer.receipts import all_regions
from producer.store import TokenStore
from producer.trigger_check import missing_triggers
from shared.kafka_client import replication_defaults
from shared.keys import SIGNERS_FRESH_S, RedisKeys, Topics
from shared.region_state import read_region_state
from shared.settings import Region, Settings

__all__ = ["Check", "Outcome", "clock_check", "exit_code", "run_checks", "signers_check"]

CLOCK_WARN_MS = 250  # skew that eats into the staleness budget


class Outcome(enum.StrEnum):
    """How one check ended."""

    PASS = "pass"  # noqa: S105 - an outcome, not a password
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """One check's answer."""

    name: str
    outcome: Outcome
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON form ``doctor --json`` prints."""
        return {
            "check": self.name,
            "outcome": str(self.outcome),
            "detail": self.detail,
            "fix": self.fix,
        }


def exit_code(checks: list[Check]) -> int:
    """0 when all pass, 1 on a warning, 2 on a failure."""
    outcomes = {c.outcome for c in checks}
    return 2 if Outcome.FAIL in outcomes else 1 if Outcome.WARN in outcomes else 0


def run_checks(settings: Settings, store: TokenStore) -> list[Check]:
    """Every check, in order; a check that cannot run is a failure naming why."""
    checks: list[Check] = []
    checks += _guard("store", lambda: _store_checks(settings, store))
    checks += _guard("signing keys", lambda: _keyring_checks(settings))
    for region in all_regions(settings, store):
        checks += _guard(f"region {region.name}", _bind(_region_checks, settings, region))
        checks += _guard(f"region {region.name} clock", _bind(_clock(store), settings, region))
        checks += _guard(
            f"region {region.name} signing keys", _bind(_signers_checks, settings, region)
        )
    checks += _guard("kafka", lambda: _kafka_checks(settings))
    return checks


def _keyring_checks(settings: Settings) -> list[Check]:
    if not settings.signing_keys:
        return [
            Check(
                "signing keys",
                Outcome.FAIL,
                "no signing keys: the relay cannot sign, workers cannot verify",
                "set TOKENSYNC_SIGNING_KEYS=KEY_ID:BASE64_SECRET (the same for relay and workers)",
            )
        ]
    return [
        Check(
            "signing keys",
            Outcome.PASS,
            f"relay keyring {', '.join(sorted(settings.signing_keys))}, "
            f"signing with {settings.signing_key_id}",
        )
    ]


def _offset_ms(read_ms: Callable[[], float]) -> float:
    """A remote clock minus this host's, sampled at the middle of the round trip."""
    before = time.time() * 1000
    remote = read_ms()
    after = time.time() * 1000
    return remote - (before + after) / 2


def clock_check(name: str, skew_ms: float, allowance_s: float) -> Check:
    """The answer for a region clock ``skew_ms`` from the store's (signed: region ahead)."""
    allowance_ms = allowance_s * 1000
    side = "ahead of" if skew_ms >= 0 else "behind"
    detail = (
        f"region clock {abs(skew_ms):.0f} ms {side} the store's "
        f"(allowance {allowance_s:g} s, TOKENSYNC_CLOCK_SKEW_ALLOWANCE)"
    )
    if abs(skew_ms) > allowance_ms:
        return Check(
            f"{name} clock",
            Outcome.FAIL,
            detail + ": expiry, epochs and heartbeats are judged on the wrong time",
            "synchronise the Redis host and the database host with NTP",
        )
    if abs(skew_ms) > min(CLOCK_WARN_MS, allowance_ms / 2):
        return Check(f"{name} clock", Outcome.WARN, detail, "synchronise both with NTP")
    return Check(f"{name} clock", Outcome.PASS, detail)


def _clock(store: TokenStore) -> Callable[[Settings, Region], list[Check]]:
    def check(settings: Settings, region: Region) -> list[Check]:
        with store.engine.connect() as conn:
            store_off = _offset_ms(lambda: float(db_now_ms(conn)))
        client = redis.Redis.from_url(region.redis_url, socket_timeout=3.0)
        try:

            def redis_ms() -> float:
                seconds, micros = client.time()
                return seconds * 1000 + micros / 1000

            region_off = _offset_ms(redis_ms)
        finally:
            client.close()
        skew = region_off - store_off
        return [clock_check(f"region {region.name}", skew, settings.clock_skew_allowance_s)]

    return check


def signers_check(name: str, keyring: list[str], entries: dict[str, Any], now_ms: int) -> Check:
    """The answer for a region whose workers recorded ``entries`` (instance -> JSON text
    ``{"kids": [...], "t": ms}``), given the relay's key ids."""
    check = f"{name} signing keys"
    fresh: dict[str, set[str]] = {}
    for instance, raw in entries.items():
        try:
            entry = json.loads(raw)
            seen = int(entry["t"])
            kids = {str(k) for k in entry["kids"]}
        except (ValueError, TypeError, KeyError):
            continue
        if now_ms - seen <= SIGNERS_FRESH_S * 1000:
            fresh[instance] = kids
    if not fresh:
        return Check(
            check,
            Outcome.FAIL,
            f"no worker recorded its signing keys in the last {SIGNERS_FRESH_S:g} s",
            "start its worker (tokensync worker) at this version",
        )
    lacking = {
        instance: sorted(set(keyring) - kids)
        for instance, kids in sorted(fresh.items())
        if set(keyring) - kids
    }
    if lacking:
        said = "; ".join(f"{inst} lacks {', '.join(ids)}" for inst, ids in lacking.items())
        missing = sorted({k for ids in lacking.values() for k in ids})
        return Check(
            check,
            Outcome.FAIL,
            f"{said}: records signed with {', '.join(missing)} are dead-lettered there",
            "give the region's workers the relay's TOKENSYNC_SIGNING_KEYS and restart them",
        )
    return Check(
        check,
        Outcome.PASS,
        f"{len(fresh)} worker(s) verify every key of the relay ({', '.join(keyring)})",
    )


def _signers_checks(settings: Settings, region: Region) -> list[Check]:
    client = redis.Redis.from_url(region.redis_url, socket_timeout=3.0)
    try:
        raw = client.hgetall(RedisKeys(settings.redis_namespace).signers)
        seconds, micros = client.time()
    finally:
        client.close()
    entries = {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }
    now_ms = int(seconds * 1000 + micros // 1000)
    return [signers_check(f"region {region.name}", sorted(settings.signing_keys), entries, now_ms)]


def _bind(
    check: Callable[[Settings, Region], list[Check]], settings: Settings, region: Region
) -> Callable[[], list[Check]]:
    return lambda: check(settings, region)


def _guard(name: str, run: Callable[[], list[Check]]) -> list[Check]:
    try:
        return run()
    except Exception as e:  # a check that cannot run is an answer, not a crash
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return [Check(name, Outcome.FAIL, f"cannot check: {first}", "make it reachable")]


def _store_checks(settings: Settings, store: TokenStore) -> list[Check]:
    checks = []
    with store.engine.connect() as conn:
        missing = missing_triggers(conn)
        before = time.time() * 1000
        db_ms = db_now_ms(conn)
        after = time.time() * 1000
        backlog = unpublished_count(conn)
        oldest = oldest_unpublished_ms(conn)
        mysql = conn.dialect.name in triggers_mysql.DIALECTS
        zone = drop = None
        if mysql:
            zone = conn.execute(sa.text("SELECT @@global.time_zone, @@system_time_zone")).one()
            drop = _mysql_can_drop(conn)
    checks.append(
        Check("triggers", Outcome.FAIL, f"missing: {', '.join(missing)}", "tokensync store repair")
        if missing
        else Check("triggers", Outcome.PASS, "every outbox trigger is in place")
    )
    skew = abs(db_ms - (before + after) / 2)
    budget_ms = settings.staleness_budget_s * 1000
    checks.append(
        Check(
            "store clock",
            Outcome.FAIL
            if skew > budget_ms
            else Outcome.WARN
            if skew > CLOCK_WARN_MS
            else Outcome.PASS,
            f"store clock {skew:.0f} ms from this host's",
            "" if skew <= CLOCK_WARN_MS else "synchronise both with NTP",
        )
    )
    age_ms = 0.0 if oldest is None else max(0.0, db_ms - oldest)
    checks.append(
        Check(
            "relay backlog",
            Outcome.FAIL if age_ms > budget_ms else Outcome.PASS,
            f"{backlog} unpublished row(s), oldest {age_ms / 1000:.1f} s old",
            "" if age_ms <= budget_ms else "start the relay (tokensync relay) and check Kafka",
        )
    )
    if zone is not None:
        utc = {"+00:00", "UTC", "Etc/UTC"}
        global_zone = zone[0] if zone[0] != "SYSTEM" else zone[1]
        checks.append(
            Check("store time zone", Outcome.PASS, f"server time zone {global_zone}")
            if global_zone in utc
            else Check(
                "store time zone",
                Outcome.WARN,
                f"server time zone {global_zone}: sessions that do not set one read and "
                "write timestamp columns in it",
                "set default-time-zone='+00:00' or the Laravel connection's 'timezone'",
            )
        )
    if drop is not None:
        checks.append(
            Check(
                "truncate privilege",
                Outcome.WARN,
                "this database user may DROP (and so TRUNCATE) personal_access_tokens: "
                "TRUNCATE fires no trigger on MySQL, so truncated tokens stay valid in regions",
                "give the application's user no DROP privilege; use DELETE",
            )
            if drop
            else Check("truncate privilege", Outcome.PASS, "this database user cannot TRUNCATE")
        )
    return checks


def _mysql_can_drop(conn: sa.Connection) -> bool:
    grants = " ".join(str(row[0]).upper() for row in conn.execute(sa.text("SHOW GRANTS")))
    return "ALL PRIVILEGES" in grants or "DROP" in grants


def _region_checks(settings: Settings, region: Region) -> list[Check]:
    name = f"region {region.name}"
    client = redis.Redis.from_url(region.redis_url, socket_timeout=3.0)
    try:
        state = read_region_state(client, RedisKeys(settings.redis_namespace), region.name)
        checks = [_eviction(name, client), _persistence(name, client)]
    finally:
        client.close()
    fresh = state.freshness_s()
    if not state.reachable:
        checks.append(
            Check(f"{name} ready", Outcome.FAIL, f"unreachable: {state.error}", "start its Redis")
        )
    elif not state.ready:
        checks.append(
            Check(f"{name} ready", Outcome.FAIL, "not ready", "start its worker (tokensync worker)")
        )
    elif fresh is None or fresh > settings.staleness_budget_s:
        seen = "no heartbeat" if fresh is None else f"last heartbeat {fresh:.1f} s old"
        checks.append(
            Check(
                f"{name} fresh",
                Outcome.FAIL,
                f"{seen} (budget {settings.staleness_budget_s:g} s)",
                "check the relay, its store triggers (tokensync doctor) and the worker",
            )
        )
    else:
        checks.append(Check(f"{name} ready", Outcome.PASS, f"ready, heartbeat {fresh:.1f} s old"))
    return checks


def _config(client: redis.Redis, key: str) -> str | None:
    try:
        raw = client.config_get(key)
    except redis.ResponseError:
        return None  # CONFIG is disabled (managed Redis)
    value = raw.get(key)
    return value.decode() if isinstance(value, bytes) else value


def _eviction(name: str, client: redis.Redis) -> Check:
    policy = _config(client, "maxmemory-policy")
    if policy is None:
        return Check(
            f"{name} eviction",
            Outcome.WARN,
            "CONFIG GET is refused: maxmemory-policy unknown",
            "make sure maxmemory-policy is noeviction",
        )
    if policy != "noeviction":
        return Check(
            f"{name} eviction",
            Outcome.FAIL,
            f"maxmemory-policy {policy}: Redis may evict revocations and un-revoke tokens",
            "CONFIG SET maxmemory-policy noeviction (and in redis.conf)",
        )
    return Check(f"{name} eviction", Outcome.PASS, "maxmemory-policy noeviction")


def _persistence(name: str, client: redis.Redis) -> Check:
    aof, save = _config(client, "appendonly"), _config(client, "save")
    if aof is None and save is None:
        return Check(f"{name} persistence", Outcome.WARN, "CONFIG GET is refused", "")
    if aof == "yes" or save:
        return Check(f"{name} persistence", Outcome.PASS, f"appendonly {aof}, save '{save}'")
    # Safe either way (an emptied cache is not ready, never "nothing revoked"): only
    # availability after a restart depends on it.
    return Check(
        f"{name} persistence",
        Outcome.PASS,
        "no AOF, no RDB snapshots: after a restart the region answers unavailable until "
        "its worker rebuilds it from the topic",
        "CONFIG SET appendonly yes, for availability after restarts",
    )


def _kafka_checks(settings: Settings) -> list[Check]:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    from producer.kafka_io import replica_counts

    topic = Topics(settings.topic_prefix).tokens
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id="tokensync-doctor",
        request_timeout_ms=5000,
        **settings.kafka_client.kafka_python_kwargs(),
    )
    try:
        described = admin.describe_topics([topic])
        brokers = len(admin.describe_cluster().get("brokers", []))
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )
    finally:
        admin.close()
    counts = replica_counts(described)
    if not counts:
        return [Check("kafka topic", Outcome.FAIL, f"{topic} does not exist", "start the relay")]
    values = _topic_values(configs)
    checks = []
    policy = values.get("cleanup.policy", "")
    checks.append(
        Check("kafka cleanup.policy", Outcome.PASS, f"{topic}: {policy}")
        if "compact" in policy.split(",")
        else Check(
            "kafka cleanup.policy",
            Outcome.FAIL,
            f"{topic}: cleanup.policy {policy or 'unknown'}: deleted segments lose grants, "
            "revocations and epochs a new region needs",
            f"kafka-configs --alter --topic {topic} --add-config cleanup.policy=compact",
        )
    )
    replicas = min(counts)
    isr = int(values.get("min.insync.replicas", "1") or 1)
    want_rf, want_isr = replication_defaults(
        brokers, settings.kafka_replication_factor, settings.kafka_min_insync_replicas
    )
    if replicas < want_rf or isr < want_isr:
        checks.append(
            Check(
                "kafka replication",
                Outcome.FAIL,
                f"{topic}: replication factor {replicas}, min.insync.replicas {isr} on "
                f"{brokers} brokers (wanted {want_rf} and {want_isr}): losing one broker "
                "can lose revocations or stop the relay",
                f"kafka-reassign-partitions to {want_rf} replicas and kafka-configs --alter "
                f"--topic {topic} --add-config min.insync.replicas={want_isr}",
            )
        )
    elif brokers <= 1:
        checks.append(
            Check(
                "kafka replication", Outcome.PASS, f"single broker: replication factor {replicas}"
            )
        )
    elif replicas < 3 or isr < 2:
        checks.append(
            Check(
                "kafka replication",
                Outcome.WARN,
                f"replication factor {replicas}, min.insync.replicas {isr} on {brokers} brokers",
                "replication factor 3 and min.insync.replicas 2",
            )
        )
    else:
        checks.append(
            Check(
                "kafka replication", Outcome.PASS, f"replication factor {replicas}, min ISR {isr}"
            )
        )
    return checks


def _topic_values(configs: Any) -> dict[str, str]:
    """``{key: value}`` from describe_configs' nested answer (shapes differ by version)."""
    found: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if (
                    isinstance(key, str)
                    and "." in key
                    and isinstance(value, dict)
                    and "value" in value
                ):
                    found[key] = str(value["value"] or "")
                elif isinstance(key, str) and "." in key and isinstance(value, str):
                    found[key] = value
                else:
                    walk(value)
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)

    walk(configs)
    return found
