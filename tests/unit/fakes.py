"""In-memory stand-ins for the unit tier, in the style of dramatiq's stub broker.

- ``MemoryRegion``: a region's Redis as the validator reads it. It holds the region's
  hashes (token records, the meta, epochs and partitions hashes) and answers the
  validator's one script call (``shared/validate.lua``) by doing in Python what the
  script does. ``tests/integration/test_memory_region_matches_lua.py`` proves the two agree, state
  for state, against a real Redis. Only the validator's script is served: any other
  script, or a call the fake does not know, fails the test.
- ``producer.publisher.MemoryPublisher`` is the in-memory topic the relay publishes to.

The hash fields are spelled here as ``validate.lua`` reads them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, Protocol

from shared.keys import RedisKeys
from shared.tokenformat import hash_token

__all__ = ["MemoryRegion", "RegionReader", "TokenFields"]

VALIDATE_LUA = files("shared").joinpath("validate.lua").read_text()
# Redis names a script by the SHA-1 of its text (not a security use)
VALIDATE_SHA = hashlib.sha1(VALIDATE_LUA.encode(), usedforsecurity=False).hexdigest()
_UUID = re.compile(
    r"\A[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)


class RegionReader(Protocol):
    """What a validator asks of its region's Redis: one script, called by digest."""

    def register_script(self, script: str) -> Any:
        """A callable script object with a ``sha`` attribute."""
        ...

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: str) -> Any:
        """Run a registered script by its digest."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True)
class TokenFields:
    """One token record as the worker writes it (``s`` is ``l`` live, ``r`` revoked)."""

    token_id: int
    tokenable_type: str = "App\\Models\\User"
    tokenable_id: str = "1"
    name: str = "name"
    abilities: tuple[str, ...] = ("*",)
    created_at_ms: int | None = None
    issued_at_ms: int | None = None
    expires_at_ms: int | None = None
    state: str = "l"

    def as_hash(self) -> dict[bytes, bytes]:
        """The fields ``workers/apply.lua`` writes (a tombstone keeps only ``s`` and ``ea``;
        no expiry is an empty ``ea``)."""
        expires = "" if self.expires_at_ms is None else self.expires_at_ms
        if self.state != "l":
            return {b"s": self.state.encode(), b"ea": str(expires).encode()}
        values: dict[str, object] = {
            "s": self.state,
            "id": self.token_id,
            "tt": self.tokenable_type,
            "ti": self.tokenable_id,
            "n": self.name,
            "ab": json.dumps(list(self.abilities), separators=(",", ":")),
            "ca": self.created_at_ms,
            "ia": self.issued_at_ms,
            "ea": expires,
        }
        return {k.encode(): str(v).encode() for k, v in values.items() if v is not None}


@dataclass
class _Script:
    region: MemoryRegion
    sha: str

    def __call__(self, keys: Sequence[str] = (), args: Sequence[Any] = ()) -> Any:
        return self.region.evalsha(self.sha, len(keys), *keys, *args)


@dataclass
class MemoryRegion:
    """A region's Redis hashes in memory, answering ``validate.lua``'s call."""

    keys: RedisKeys = field(default_factory=RedisKeys)
    hashes: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    calls: int = 0
    down: bool = False
    """While set, every call raises ``redis.ConnectionError`` (an unreachable server)."""

    # -- putting the region into a state -------------------------------------------------
    def make_ready(self, oldest_heartbeat_ms: int | None) -> MemoryRegion:
        """Ready, epochs and partitions hashes present, the oldest partition heartbeat
        (None: not every partition has one)."""
        meta = self.hashes.setdefault(self.keys.meta, {})
        meta[b"ready"] = b"1"
        if oldest_heartbeat_ms is None:
            meta.pop(b"hb_min", None)
        else:
            meta[b"hb_min"] = str(oldest_heartbeat_ms).encode()
        self.hashes.setdefault(self.keys.epochs, {})[b"~present"] = b"1"
        self.hashes.setdefault(self.keys.partitions, {})[b"~present"] = b"1"
        return self

    def put(self, plain: str, fields: TokenFields) -> str:
        """Store a token record under the hash of ``plain``; returns its key."""
        key = self.keys.token(hash_token(plain))
        self.hashes[key] = fields.as_hash()
        return key

    def epoch(self, scope: str, before_ms: int) -> None:
        epochs = self.hashes.setdefault(self.keys.epochs, {})
        epochs[scope.encode()] = str(max(before_ms, int(epochs.get(scope.encode(), 0)))).encode()

    # -- the client side the validator uses ----------------------------------------------
    def register_script(self, script: str) -> _Script:
        if script != VALIDATE_LUA:
            raise AssertionError("MemoryRegion serves validate.lua only")
        return _Script(self, VALIDATE_SHA)

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: str) -> list[Any]:
        import redis

        self.calls += 1
        if self.down:
            raise redis.ConnectionError("MemoryRegion is down")
        if sha != VALIDATE_SHA or numkeys != 4:
            raise AssertionError(f"unexpected script call {sha} with {numkeys} keys")
        token_key, meta_key, epochs_key, partitions_key = keys_and_args[:4]
        return self.validate_reply(token_key, meta_key, epochs_key, partitions_key)

    def close(self) -> None:
        return None

    # -- validate.lua, in Python ---------------------------------------------------------
    def validate_reply(
        self, token_key: str, meta_key: str, epochs_key: str, partitions_key: str
    ) -> list[Any]:
        meta = self.hashes.get(meta_key, {})
        epochs = self.hashes.get(epochs_key, {})
        partitions = self.hashes.get(partitions_key, {})
        ready = 1 if meta.get(b"ready") == b"1" else 0
        if ready == 1 and (b"~present" not in epochs or b"~present" not in partitions):
            ready = -1
        token = self.hashes.get(token_key, {})
        names = (b"s", b"id", b"tt", b"ti", b"n", b"ab", b"ca", b"ia", b"ea")
        tok = [token.get(name) for name in names]
        epoch = 0
        if tok[0] == b"l":
            tt, ti = (tok[2] or b"").decode(), (tok[3] or b"").decode()
            scopes = ["global", f"principal:{tt}:{ti}"]
            if _UUID.match(ti) and ti.lower() != ti:
                scopes.append(f"principal:{tt}:{ti.lower()}")
            try:
                abilities = json.loads(tok[5] or b"")
            except ValueError:
                abilities = None
            if isinstance(abilities, list):
                scopes += [f"ability:{a}" for a in abilities if isinstance(a, str)]
            for scope in scopes:
                value = epochs.get(scope.encode())
                if value is not None and int(value) > epoch:
                    epoch = int(value)
        hb_min = meta.get(b"hb_min")
        return [ready, int(hb_min) if hb_min is not None else -1, epoch, *tok]
