"""``tokensync doctor``'s checks of one region: its Redis (eviction policy, persistence,
readiness, freshness), its clock against the store's, and the signing key ids its workers
verify with against this keyring."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis

from producer.clock import db_now_ms
from producer.doctor_report import CLOCK_WARN_MS, Check, Outcome
from producer.store import TokenStore
from shared.keys import SIGNERS_FRESH_S, RedisKeys, SignerField
from shared.region_state import read_region_state
from shared.settings import Region, Settings

__all__ = [
    "clock_check",
    "region_checks",
    "region_clock_checks",
    "region_signers_checks",
    "signers_check",
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


def region_clock_checks(store: TokenStore) -> Callable[[Settings, Region], list[Check]]:
    """A check of a region's clock (Redis ``TIME``) against the store's."""

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
            seen = int(entry[SignerField.TIME])
            kids = {str(k) for k in entry[SignerField.KEY_IDS]}
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


def region_signers_checks(settings: Settings, region: Region) -> list[Check]:
    """The signing key ids the region's workers recorded, against this keyring."""
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


def region_checks(settings: Settings, region: Region) -> list[Check]:
    """The region's Redis: eviction policy, persistence, readiness and freshness."""
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
