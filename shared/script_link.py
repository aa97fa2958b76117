"""A synchronous validator's own connections to one Redis server: ``validate.lua`` sent as
one pre-packed ``EVALSHA`` and read raw (no pool bookkeeping, no response callbacks), and
the server's replication id verified out of band on every connection.

Each connection asks ``INFO replication`` when it (re)connects (one round trip, before its
first script) and then every ``check_interval_s`` (sent in the same write just before a
script, read first: no extra round trip; a script that compared an outdated id is asked
again with the new one); the script receives the ``master_replid`` seen as ``ARGV[1]`` and
compares it with the one the worker recorded (``''``: INFO was refused, the script fails
closed). The window this opens, against the in-script check on every call: a server whose
replication id changes *while a connection stays open* (``REPLICAOF`` on the server read, a
Redis-aware proxy switching servers under one client connection) is noticed by the next
check, at most ``check_interval_s`` later. A new connection (a restart, a failover behind a
DNS name or a plain TCP proxy) is always checked before its first script. An interval of 0
asks INFO inside the script on every call, as before.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

__all__ = ["ScriptLink", "replication_id"]

# what the script is told when the server refused INFO (the script then fails closed)
REFUSED: bytes = b""
_INFO = b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n"


def replication_id(info: bytes | str) -> bytes:
    """``master_replid`` of an ``INFO replication`` text (``REFUSED`` if absent)."""
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else info
    for line in text.splitlines():
        if line.startswith("master_replid:"):
            return line.split(":", 1)[1].strip().encode()
    return REFUSED


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


@dataclass(eq=False)
class _Link:
    """One connection and what its server said about its replication id, and when."""

    connection: Any  # redis-py's Connection (its methods are untyped)
    replid: bytes = REFUSED
    checked_connects: int = -1  # the connect count the replid was read on
    due: float = 0.0  # monotonic time of the next check
    connects: int = 0

    def connected(self, _connection: object) -> None:
        """redis-py's connect callback: a new socket, maybe to another server."""
        self.connects += 1

    def drop(self) -> None:
        """Close the socket; the next one is checked before its first script."""
        self.connection.disconnect()
        self.checked_connects = -1


class ScriptLink:
    """Runs one script on one server (``client``'s), ``check_interval_s`` > 0."""

    def __init__(
        self,
        client: redis.Redis,
        script: str,
        sha: str,
        fixed_keys: Sequence[str],
        *,
        check_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.script = script
        self.check_interval_s = check_interval_s
        self.clock = clock
        self._pool = client.connection_pool
        self._free: deque[_Link] = deque()
        self._all: list[_Link] = []
        self._pid = os.getpid()
        count = 1 + len(fixed_keys)
        # EVALSHA, the digest, the key count, the keys, ARGV[1]
        self._head = b"*%d\r\n$7\r\nEVALSHA\r\n%s%s" % (
            count + 4,
            _bulk(sha.encode()),
            _bulk(str(count).encode()),
        )
        self._fixed = b"".join(_bulk(k.encode()) for k in fixed_keys)

    def _new(self) -> _Link:
        link = _Link(self._pool.connection_class(**self._pool.connection_kwargs))
        link.connection.register_connect_callback(link.connected)
        self._all.append(link)
        return link

    def call(self, key: str) -> Any:
        """The script's reply for ``key`` (KEYS[1]) with the fixed keys and the verified
        replication id; RedisError (NoScriptError handled) as redis-py raises them. A
        connection that broke while idle (a restarted server) is opened again once; a
        timeout is not retried."""
        if os.getpid() != self._pid:  # a forked child never shares its parent's sockets
            self._free, self._all, self._pid = deque(), [], os.getpid()
        try:
            link = self._free.pop()
        except IndexError:
            link = self._new()
        try:
            try:
                return self._call(link, key)
            except redis.ConnectionError:
                link.drop()
                return self._call(link, key)
        except BaseException:
            link.drop()  # never reuse a connection with a reply pending
            raise
        finally:
            self._free.append(link)

    def _call(self, link: _Link, key: str) -> Any:
        conn = link.connection
        for _ in range(3):  # a reconnect during the call, a flushed script, a new id: again
            if link.checked_connects != link.connects:  # a new socket: check before asking
                conn.send_packed_command([_INFO], check_health=False)
                self._read_check(link)
            recheck = self.clock() >= link.due
            connects, replid = link.connects, link.replid
            token = _bulk(key.encode())
            packed = b"%s%s%s%s" % (self._head, token, self._fixed, _bulk(replid))
            # a due check rides in the same write, just before the script: no extra trip
            conn.send_packed_command([_INFO + packed if recheck else packed], check_health=False)
            if recheck:
                self._read_check(link)
            try:
                reply = conn.read_response()
            except redis.exceptions.NoScriptError:
                conn.send_command("SCRIPT", "LOAD", self.script, check_health=False)
                conn.read_response()
                continue
            # the same socket, and the id the script compared is the server's: answer
            if connects == link.connects and replid == link.replid:
                return reply
        raise redis.ConnectionError("the server's connection or identity kept changing")

    def _read_check(self, link: _Link) -> None:
        """Read the reply of an ``INFO replication`` sent on this link's connection."""
        try:
            link.replid = replication_id(link.connection.read_response())
        except redis.exceptions.ResponseError:  # NOPERM, a renamed command: fail closed
            link.replid = REFUSED
        link.checked_connects = link.connects
        link.due = self.clock() + self.check_interval_s

    def close(self) -> None:
        """Close every connection of this link."""
        for link in self._all:
            link.connection.disconnect()
