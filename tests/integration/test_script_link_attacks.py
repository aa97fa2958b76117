"""Attacks on the synchronous validator's own connections (``shared.script_link``): a reply
left on a socket by a timed-out call, a flushed script cache, a server that is down or
refuses INFO after the connection was checked, a fork, killed connections and the RESP3
and decoded-reply clients redis-py accepts (review of issue 18 item 3)."""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from shared.events import TokenOp
from shared.tokenformat import checksum
from shared.validator import Outcome, Policy, Validator
from tests.region_helpers import RegionFixture

pytestmark = pytest.mark.integration


def _plain(letter: str) -> str:
    entropy = letter * 40
    return entropy + checksum(entropy)


LIVE = _plain("v")
REVOKED = _plain("r")


@pytest.fixture
def region(redis_url: str) -> RegionFixture:
    fixture = RegionFixture(redis_url)
    fixture.beat()
    fixture.token(LIVE, token_id=1, owner="1")
    fixture.token(REVOKED, token_id=2, owner="2")
    fixture.token(REVOKED, token_id=2, op=TokenOp.REVOKED)
    return fixture


def test_a_call_that_timed_out_never_leaves_its_reply_for_the_next_call(
    redis_url: str, region: RegionFixture
) -> None:
    """A live token's call times out while the server is paused; the server then answers
    it. The next call, for a revoked token, must read its own answer, not that one."""
    validator = Validator(redis.Redis.from_url(redis_url, socket_timeout=0.3))
    admin = redis.Redis.from_url(redis_url)
    try:
        assert Outcome.VALID == validator.validate(LIVE).outcome  # the link is open, checked
        admin.client_pause(700)
        assert Outcome.UNAVAILABLE == validator.validate(LIVE).outcome
        time.sleep(0.8)  # the paused EVALSHA has run and its reply was sent back
        answer = validator.validate(REVOKED)
        assert (Outcome.INVALID, "revoked") == (answer.outcome, answer.reason)
    finally:
        admin.client_unpause()
        admin.close()
        validator.close()


def test_a_flushed_script_cache_and_killed_connections_are_answered_again(
    redis_url: str, region: RegionFixture
) -> None:
    validator = Validator.from_url(redis_url)
    admin = redis.Redis.from_url(redis_url)
    try:
        assert Outcome.VALID == validator.validate(LIVE).outcome
        admin.script_flush()
        assert Outcome.VALID == validator.validate(LIVE).outcome
        admin.client_kill_filter(_type="normal", skipme=True)
        assert Outcome.INVALID == validator.validate(REVOKED).outcome
        assert Outcome.VALID == validator.validate(LIVE).outcome
    finally:
        admin.close()
        validator.close()


def test_a_server_that_is_down_answers_unavailable_without_raising() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    validator = Validator.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        answer = validator.validate(LIVE)
        assert Outcome.UNAVAILABLE == answer.outcome
    finally:
        validator.close()


def test_info_refused_after_the_connection_was_checked_fails_closed_within_the_interval(
    redis_url: str, region: RegionFixture
) -> None:
    admin = redis.Redis.from_url(redis_url)
    user = f"svc{os.getpid()}"
    admin.acl_setuser(
        user, enabled=True, passwords=["+pw"], keys=["*"], channels=["*"], categories=["+@all"]
    )
    host_port_db = redis_url.split("://", 1)[1]
    validator = Validator.from_url(f"redis://{user}:pw@{host_port_db}")
    try:
        assert Outcome.VALID == validator.validate(LIVE).outcome
        admin.acl_setuser(user, categories=["-@dangerous"])  # INFO is @dangerous
        time.sleep(Policy().server_check_interval_s * 2)
        answer = validator.validate(LIVE)
        assert (Outcome.UNAVAILABLE, "server_unverified") == (answer.outcome, answer.reason)
    finally:
        admin.acl_deluser(user)
        admin.close()
        validator.close()


@pytest.mark.parametrize("options", ["protocol=3", "decode_responses=true"])
def test_resp3_and_decoded_clients_give_the_answers_of_the_strict_mode(
    redis_url: str, region: RegionFixture, options: str
) -> None:
    url = f"{redis_url}?{options}"
    lean = Validator.from_url(url)
    strict = Validator.from_url(url, policy=Policy(server_check_interval_s=0))
    try:
        for token in (LIVE, REVOKED, _plain("u")):
            a, b = lean.validate(token), strict.validate(token)
            assert (a.outcome, a.reason, a.principal) == (b.outcome, b.reason, b.principal)
    finally:
        lean.close()
        strict.close()


def test_a_child_forked_after_use_answers_on_its_own_connections(
    redis_url: str, region: RegionFixture
) -> None:
    validator = Validator.from_url(redis_url)
    try:
        assert Outcome.VALID == validator.validate(LIVE).outcome
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                answers = [validator.validate(t).outcome for t in (REVOKED, LIVE) * 50]
                ok = answers == [Outcome.INVALID, Outcome.VALID] * 50
                code = 0 if ok else 2
            finally:
                os.write(write, bytes([code]))
                os._exit(0)
        parent = [validator.validate(LIVE).outcome for _ in range(100)]  # while the child asks
        os.close(write)
        assert b"\x00" == os.read(read, 1)
        os.waitpid(pid, 0)
        assert {Outcome.VALID} == set(parent)
        assert Outcome.INVALID == validator.validate(REVOKED).outcome
    finally:
        validator.close()


def test_eight_threads_whose_connections_are_killed_again_and_again_never_get_another_tokens_answer(
    redis_url: str, region: RegionFixture
) -> None:
    tokens = {n: _plain(letter) for n, letter in enumerate("abcdefgh", start=10)}
    for n, plain in tokens.items():
        region.token(plain, token_id=n, owner=str(n))
        if n % 2:
            region.token(plain, token_id=n, op=TokenOp.REVOKED)
    validator = Validator(redis.Redis.from_url(redis_url, socket_timeout=1.0))
    admin = redis.Redis.from_url(redis_url)
    stop = threading.Event()
    killed = []

    def killer() -> None:
        while not stop.is_set():
            killed.append(int(admin.client_kill_filter(_type="normal", skipme=True)))
            time.sleep(0.003)

    def answer(n: int) -> tuple[int, Outcome, str | None]:
        result = validator.validate(f"{n}|{tokens[n]}")
        return n, result.outcome, result.principal.tokenable_id if result.principal else None

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(answer, [n for _ in range(150) for n in tokens]))
    finally:
        stop.set()
        thread.join()
        admin.close()
        validator.close()
    wrong = [
        a
        for a in answers
        if a[1] is not Outcome.UNAVAILABLE
        and a != ((a[0], Outcome.INVALID, None) if a[0] % 2 else (a[0], Outcome.VALID, str(a[0])))
    ]
    assert [] == wrong
    assert sum(killed) > 20, killed  # the threads' connections were killed under them
    # enough real answers that the check above means something (how many calls meet a
    # killed connection depends on the machine's load: CI saw 682 of 1,200)
    answered = [a for a in answers if a[1] is not Outcome.UNAVAILABLE]
    assert len({a[0] for a in answered}) == len(tokens) and len(answered) >= 100, len(answered)


def test_two_threads_making_a_validators_first_call_at_once_leave_no_connection_open_after_close(
    redis_url: str, region: RegionFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both threads find no link yet; the link's set-up is slowed so both build one. After
    ``close()`` not one of the validator's connections may stay open on the server."""
    from shared import script_link

    original = script_link.ScriptLink.__init__

    def slow_init(self: script_link.ScriptLink, *args: object, **kwargs: object) -> None:
        time.sleep(0.2)  # both threads are inside the set-up at the same time
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(script_link.ScriptLink, "__init__", slow_init)
    admin = redis.Redis.from_url(redis_url)
    validator = Validator(redis.Redis.from_url(redis_url, client_name="link-race"))
    try:
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: validator.validate(LIVE).outcome, range(2)))
        assert answers == [Outcome.VALID, Outcome.VALID]
    finally:
        validator.close()
    time.sleep(0.2)
    mine = [c for c in admin.client_list() if c.get("name") == "link-race"]
    admin.close()
    assert mine == []
