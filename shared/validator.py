"""Validating tokens locally against a region's Redis: one round trip, Sanctum's rules.

``Validator`` (sync) and ``AsyncValidator`` (asyncio) share the rules in
``interpret`` (``shared.interpret``; their ``Policy`` in ``shared.policy``, both
re-exported here): a malformed token is *invalid* before any Redis call; a region
that is not ready or staler than its budget is *unavailable* (never *valid*);
then revoked, expired and epoch-revoked tokens are *invalid* and a token that
lacks a required ability is *forbidden*.

Longer than ~350 lines: the sync and async twins stay side by side, each with the read
route to a replica and its primary (``shared.read_route``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, Self

import redis
import redis.asyncio as aioredis

from shared import tracing
from shared.interpret import Request, apply_fallback, created_at_ms, interpret
from shared.keys import RedisKeys
from shared.nearcache import CachedToken, NearCache
from shared.outcomes import Outcome, Principal, ValidationResult
from shared.policy import Fallback, FallbackAnswer, Policy
from shared.read_route import ReadRoute, route_of
from shared.region_url import choose_read_url
from shared.rules import Mode, judge, missing_abilities
from shared.script_link import ScriptLink
from shared.settings import Settings
from shared.tokenformat import parse_presented
from shared.usage import UsageRecorder

__all__ = [
    "AsyncValidator",
    "Fallback",
    "FallbackAnswer",
    "Mode",
    "Outcome",
    "Policy",
    "Principal",
    "Request",
    "ValidationResult",
    "Validator",
    "check_abilities",
    "interpret",
]

_SCRIPT = files("shared").joinpath("validate.lua").read_text()


def check_abilities(principal: Principal, required: Sequence[str], mode: Mode) -> tuple[str, ...]:
    """The required abilities the principal lacks (``all``), or all of them if it has none
    (``any``); empty means allowed (``shared.rules.missing_abilities``)."""
    return missing_abilities(principal, required, mode)


def _required(abilities: Iterable[str] | str) -> tuple[str, ...]:
    return (abilities,) if isinstance(abilities, str) else tuple(abilities)


_MALFORMED = ValidationResult(Outcome.INVALID, reason="malformed", source="shape")


def _script_keys(keys: RedisKeys, token_key: str) -> list[str]:
    """``validate.lua``'s KEYS: the token, the meta hash, and the two hashes whose presence
    markers say the region is complete (epochs, partitions)."""
    return [token_key, keys.meta, keys.epochs, keys.partitions]


def _from_settings(
    settings: Settings, region: str, kwargs: dict[str, Any]
) -> tuple[str, str | None, dict[str, Any]]:
    """The Redis URL to read, the primary's to fall back to (None: none), and the defaults
    (key namespace, policy) both validators take from settings."""
    kwargs.setdefault("keys", RedisKeys(settings.redis_namespace))
    kwargs.setdefault("policy", Policy.from_settings(settings))
    read_from = kwargs.pop("read_from", settings.read_from)
    return *choose_read_url(settings.region(region).url, read_from), kwargs


@dataclass(frozen=True, slots=True)
class _Lookup:
    """A well-formed request on its way to Redis, with the near-cache version seen before."""

    request: Request
    key: str
    version: int


def _before_redis(
    owner: Validator | AsyncValidator,
    token: object,
    abilities: Iterable[str] | str,
    mode: Mode,
    now_ms: int,
) -> ValidationResult | _Lookup:
    """A near-cache answer or *malformed* (no Redis call), or the lookup to make."""
    tracing.validation_began()
    near, keys, policy = owner.near_cache, owner.keys, owner.policy
    if near is not None and isinstance(token, str):
        hit = near.get(token, now_ms)
        if hit is not None:
            freshness = near.freshness_s(now_ms)
            return _from_near_cache(
                hit, _required(abilities), mode, policy, now_ms, freshness_s=freshness
            )
    parsed = parse_presented(token)
    if parsed is None:
        return _MALFORMED
    request = Request(str(token), parsed, _required(abilities), mode, now_ms)
    return _Lookup(request, keys.token(parsed.token_hash), near.version if near else 0)


def _after_redis(
    reply: Sequence[Any] | None,
    lookup: _Lookup,
    near: NearCache | None,
    policy: Policy,
    fallback: Fallback | None,
) -> ValidationResult:
    """Judge the script's reply (None: Redis did not answer), remember a valid principal,
    and let the fallback policy speak for an unavailable region."""
    if reply is None:
        result = ValidationResult(Outcome.UNAVAILABLE, reason="redis_unreachable")
    else:
        result = interpret(reply, lookup.request, policy)
        if near is not None and result.principal is not None:
            near.put(
                lookup.request.token,
                lookup.key,
                result.principal,
                created_at_ms(reply),
                version=lookup.version,
                now_ms=lookup.request.now_ms,
            )
    if result.outcome is Outcome.UNAVAILABLE:
        return apply_fallback(fallback, lookup.request, policy, result)
    return result


def _used(
    usage: UsageRecorder | None,
    result: ValidationResult,
    now_ms: int,
    step: ValidationResult | _Lookup | None = None,
) -> ValidationResult:
    tracing.validated(result.outcome.value, result.source)
    if usage is not None:
        usage.observe(result, now_ms, step.request.parsed if isinstance(step, _Lookup) else None)
    return result


class _Features:
    """What both validators share beyond one lookup: construction from settings, and the
    optional near-cache and usage recorder (background threads on a synchronous client)."""

    client: Any
    keys: RedisKeys
    policy: Policy
    near_cache: NearCache | None
    usage: UsageRecorder | None
    primary: Any  # the region's primary when ``client`` is a replica (fallback, writes)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Self:
        raise NotImplementedError

    @classmethod
    def from_settings(cls, settings: Settings, region: str, **kwargs: Any) -> Self:
        """A validator of ``region`` as the settings describe it: reading the server that
        ``read_from`` (default: ``settings.read_from``) names, falling back to the primary."""
        url, primary, options = _from_settings(settings, region, kwargs)
        if primary is not None:
            options["primary"] = cls.from_url(primary).client
        return cls.from_url(url, **options)

    def _route(self) -> ReadRoute[Any]:
        return route_of(self.__dict__, self.client, self.primary)

    def _read_primary(self) -> None:
        """Read from the primary from now on (a near-cache listens, registers and reads
        there: its invalidations and the reads it caches must come from one server)."""
        if self.primary is not None:
            self.client, self.primary = self.primary, None
            self._script = self.client.register_script(_SCRIPT)

    def _thread_client(self, write: bool = False) -> redis.Redis:
        """A synchronous client for background threads (to the primary if ``write``)."""
        raise NotImplementedError

    def enable_usage(
        self, interval_s: float = 15.0, client: redis.Redis | None = None
    ) -> UsageRecorder:
        """Record when tokens are used, flushed to the region every ``interval_s`` by a
        background thread (on ``client``; by default one to this validator's server)."""
        if self.usage is None:  # usage is written: to the primary
            sync = client if client is not None else self._thread_client(write=True)
            self.usage = UsageRecorder(sync, self.keys, interval_s).start()
        return self.usage

    def enable_near_cache(
        self,
        max_entries: int = 100_000,
        client: redis.Redis | None = None,
        bound_s: float = 0.25,
    ) -> NearCache:
        """Cache valid answers in process; a listener thread hears the region's
        invalidations (on ``client``, as for usage). The cache answers only while it has
        processed, less than ``bound_s`` ago, everything the region published, and only
        while the region itself may answer (see ``shared.nearcache``)."""
        if self.near_cache is None:
            self._read_primary()
            self.near_cache = NearCache(
                client if client is not None else self._thread_client(),
                self.keys,
                freshness=self.policy.freshness,
                bound_s=bound_s,
                max_entries=max_entries,
            ).start()
        return self.near_cache


@dataclass
class Validator(_Features):
    """Synchronous validator of one region (one Redis round trip per call, none on a
    near-cache hit)."""

    client: redis.Redis
    keys: RedisKeys = field(default_factory=RedisKeys)
    policy: Policy = field(default_factory=Policy)
    fallback: Fallback | None = None
    clock: Callable[[], float] = time.time
    near_cache: NearCache | None = None
    usage: UsageRecorder | None = None
    primary: redis.Redis | None = None

    def __post_init__(self) -> None:
        self._script = self.client.register_script(_SCRIPT)
        self._links: dict[int, ScriptLink] = {}
        self._links_lock = threading.Lock()  # two first calls at once build one link

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Self:
        """A validator on the Redis at ``url``."""
        return cls(redis.Redis.from_url(url, socket_timeout=1.0), **kwargs)

    def _thread_client(self, write: bool = False) -> redis.Redis:
        return self.primary if write and self.primary is not None else self.client

    def _link(self, client: redis.Redis) -> ScriptLink | None:
        """The validator's own connections to ``client``'s server (None: the in-script
        replication-id check on every call, through redis-py)."""
        interval = self.policy.server_check_interval_s
        if interval <= 0 or not isinstance(client, redis.Redis):  # 0, or a test's fake
            return None
        link = self._links.get(id(client))
        if link is not None and link.client is client:
            return link
        with self._links_lock:
            link = self._links.get(id(client))
            if link is None or link.client is not client:
                if link is not None:  # a client of the same id() replaced this one's
                    link.close()
                fixed = _script_keys(self.keys, "")[1:]
                link = ScriptLink(
                    client, _SCRIPT, self._script.sha, fixed, check_interval_s=interval
                )
                self._links[id(client)] = link
            return link

    def close(self) -> None:
        """Close the connection pool (stop the near-cache, flush usage first)."""
        if self.near_cache is not None:
            self.near_cache.stop()
        if self.usage is not None:
            self.usage.stop()
        for link in self._links.values():
            link.close()
        self.client.close()
        if self.primary is not None:
            self.primary.close()

    def validate(
        self, token: object, abilities: Iterable[str] | str = (), mode: Mode = "all"
    ) -> ValidationResult:
        """Validate ``token`` requiring ``abilities`` (``all`` of them, or ``any``)."""
        now_ms = int(self.clock() * 1000)
        step = _before_redis(self, token, abilities, mode, now_ms)
        if isinstance(step, ValidationResult):
            return _used(self.usage, step, now_ms)
        reply = self._ask(step.key)
        result = _after_redis(reply, step, self.near_cache, self.policy, self.fallback)
        return _used(self.usage, result, now_ms, step)

    def _ask(self, key: str) -> Any:
        """The script's reply from the read server, else the primary; None if neither
        answered."""
        route = self._route()
        for client in route.order():
            try:
                return self._evalsha(key, client)
            except redis.RedisError:
                route.failed(client)
        return None

    def _evalsha(self, key: str, client: redis.Redis | None = None) -> Any:
        """The script by its digest (one round trip); loaded on first use or after a flush."""
        client = self.client if client is None else client
        link = self._link(client)
        if link is not None:
            return link.call(key)
        keys = _script_keys(self.keys, key)
        try:
            return client.evalsha(self._script.sha, len(keys), *keys)
        except redis.exceptions.NoScriptError:
            return self._script(keys=keys, client=client)


def _from_near_cache(
    hit: CachedToken,
    required: tuple[str, ...],
    mode: Mode,
    policy: Policy,
    now_ms: int,
    *,
    freshness_s: float | None,
) -> ValidationResult:
    """Answer from a cached principal (cached only after the id, state and epoch checks
    passed; any epoch that moves clears the cache)."""
    return judge(
        hit.record,
        0,
        now_ms,
        required=required,
        mode=mode,
        expiration_minutes=policy.expiration_minutes,
        source="near-cache",
        freshness_s=freshness_s,
    )


@dataclass
class AsyncValidator(_Features):
    """The asyncio twin of ``Validator``."""

    client: aioredis.Redis
    keys: RedisKeys = field(default_factory=RedisKeys)
    policy: Policy = field(default_factory=Policy)
    fallback: Fallback | None = None
    clock: Callable[[], float] = time.time
    near_cache: NearCache | None = None
    usage: UsageRecorder | None = None
    primary: aioredis.Redis | None = None

    def __post_init__(self) -> None:
        self._script = self.client.register_script(_SCRIPT)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Self:
        """A validator on the Redis at ``url``."""
        return cls(aioredis.Redis.from_url(url, socket_timeout=1.0), **kwargs)

    def _thread_client(self, write: bool = False) -> redis.Redis:
        return _sync_twin(self.primary if write and self.primary is not None else self.client)

    async def close(self) -> None:
        """Close the connection pool (stop the near-cache, flush usage first)."""
        if self.near_cache is not None:
            await asyncio.to_thread(self.near_cache.stop)
        if self.usage is not None:
            await asyncio.to_thread(self.usage.stop)
        await self.client.aclose()
        if self.primary is not None:
            await self.primary.aclose()

    async def validate(
        self, token: object, abilities: Iterable[str] | str = (), mode: Mode = "all"
    ) -> ValidationResult:
        """Validate ``token`` requiring ``abilities`` (``all`` of them, or ``any``)."""
        now_ms = int(self.clock() * 1000)
        step = _before_redis(self, token, abilities, mode, now_ms)
        if isinstance(step, ValidationResult):
            return _used(self.usage, step, now_ms)
        reply = None
        route = self._route()
        for client in route.order():
            try:
                reply = await self._script(keys=_script_keys(self.keys, step.key), client=client)
                break
            except aioredis.RedisError:
                route.failed(client)
        result = _after_redis(reply, step, self.near_cache, self.policy, self.fallback)
        return _used(self.usage, result, now_ms, step)


def _sync_twin(client: aioredis.Redis) -> redis.Redis:
    """A synchronous client to the server ``client`` talks to (for background threads)."""
    kw = client.connection_pool.connection_kwargs
    common: dict[str, Any] = {
        "db": kw.get("db", 0),
        "username": kw.get("username"),
        "password": kw.get("password"),
        "socket_timeout": 1.0,
    }
    if issubclass(client.connection_pool.connection_class, aioredis.SSLConnection):
        common |= {"ssl": True, **{k: v for k, v in kw.items() if k.startswith("ssl_")}}
    if "path" in kw:
        return redis.Redis(unix_socket_path=kw["path"], **common)
    return redis.Redis(host=kw.get("host", "127.0.0.1"), port=kw.get("port", 6379), **common)
