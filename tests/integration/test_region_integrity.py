"""A region never silently forgets what it applied: restores, lost generations, eviction,
added partitions, foreign streams, and remove/add on the same Redis (real Kafka and Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewPartitions

from producer.kafka_io import KafkaAdmin
from producer.records import IssuedToken
from shared.cli import root
from shared.events import Heartbeat, TokenEvent, TokenOp, encode
from shared.keys import RedisKeys, Topics
from shared.region_state import read_region_state
from shared.validator import Outcome, Validator
from stack.process import free_port
from tests.harness import Pipeline
from tests.kafka_helpers import KEYRING, wait_for
from workers.app import stream_source

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def outcome(validator: Validator, token: IssuedToken) -> Outcome:
    return validator.validate(token.plain_text_token).outcome


def never_valid_then_invalid(
    validator: Validator, token: IssuedToken, within_s: float, then_s: float = 2.0
) -> None:
    """The token turns invalid within ``within_s`` and stays so for ``then_s``."""
    wait_for(lambda: outcome(validator, token) is Outcome.INVALID, within_s, "token invalid")
    deadline = time.monotonic() + then_s
    while time.monotonic() < deadline:
        assert Outcome.VALID != outcome(validator, token)
        time.sleep(0.02)


def snapshot(client: redis.Redis, keys: RedisKeys) -> dict[bytes, tuple[bytes, int]]:
    """Every key of the namespace as DUMP blobs with their TTLs (a backup)."""
    saved = {}
    for key in client.scan_iter(match=keys.pattern, count=1000):
        blob = client.dump(key)
        if blob is not None:
            saved[key] = (blob, max(0, int(client.pttl(key))))
    return saved


def restore(client: redis.Redis, keys: RedisKeys, saved: dict[bytes, tuple[bytes, int]]) -> None:
    """Put the namespace back exactly as it was in ``saved`` (a restore from backup)."""
    with client.pipeline(transaction=True) as pipe:
        for key in client.scan_iter(match=keys.pattern, count=1000):
            pipe.delete(key)
        for key, (blob, ttl) in saved.items():
            pipe.restore(key, ttl, blob, replace=True)
        pipe.execute()


def test_a_region_restored_from_a_backup_reapplies_the_revocations_it_lost(
    pipeline: Pipeline,
) -> None:
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    victim = pipeline.store.issue(USER, 1, "victim")
    pipeline.wait_applied(victim.seq)
    client = pipeline.redis("eu")
    validator = pipeline.validator("eu")
    try:
        backup = snapshot(client, pipeline.keys)
        pipeline.wait_applied(pipeline.store.revoke_token(victim.id).seq)
        assert Outcome.INVALID == outcome(validator, victim)
        restore(client, pipeline.keys, backup)
        never_valid_then_invalid(validator, victim, within_s=5)
        assert "cache_rewound" in pipeline.worker_log("eu")
    finally:
        validator.close()
        client.close()


def redis_argv(binary: str, port: int, data: Path) -> list[str]:
    """A redis-server that loads (and, on SAVE, writes) ``dump.rdb`` in ``data``."""
    return [
        *(binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)),
        *("--save", "", "--appendonly", "no", "--dbfilename", "dump.rdb"),
    ]


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[tuple[str, Path, int]]:
    """A redis-server of this test's own that keeps an RDB file; restartable on its port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed")
    data = tmp_path / "rdb"
    data.mkdir()
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(
                redis_argv(binary, port, data),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for(lambda: _pings(port), 15, "redis-server up")

    start()
    yield f"redis://127.0.0.1:{port}/0", data, port
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


def _pings(port: int) -> bool:
    try:
        client = redis.Redis(port=port, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def test_a_region_whose_redis_restarts_from_an_older_rdb_file_reapplies_what_it_lost(
    tmp_path: Path,
    kafka_bootstrap: str,
    sqlite_url: str,
    topics: Topics,
    persistent_redis: tuple[str, Path, int],
) -> None:
    url, data, port = persistent_redis
    pipeline = Pipeline(tmp_path, kafka_bootstrap, sqlite_url, topics, {"eu": url})
    try:
        pipeline.start_relay()
        pipeline.start_worker("eu")
        pipeline.wait_ready("eu")
        victim = pipeline.store.issue(USER, 1, "victim")
        pipeline.wait_applied(victim.seq)
        client = redis.Redis.from_url(url)
        client.save()
        pipeline.wait_applied(pipeline.store.revoke_token(victim.id).seq)
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(nosave=True)
        client.close()
        binary = shutil.which("redis-server") or "redis-server"
        restarted = subprocess.Popen(
            redis_argv(binary, port, data),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: _pings(port), 15, "redis-server restarted")
            validator = pipeline.validator("eu")
            never_valid_then_invalid(validator, victim, within_s=10)
            validator.close()
        finally:
            pipeline.close()
            restarted.terminate()
            restarted.wait(timeout=10)
    except BaseException:
        pipeline.close()
        raise


def test_a_lost_generation_with_surviving_offsets_rebuilds_from_offset_0(
    pipeline: Pipeline,
) -> None:
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    tokens = [pipeline.store.issue(USER, i, f"k{i}") for i in range(30)]
    pipeline.wait_applied(pipeline.store.revoke_all().seq)
    pipeline.stop_worker("eu")
    client = pipeline.redis("eu")
    client.delete(pipeline.keys.meta, pipeline.keys.epochs)  # the offsets hash survives
    client.close()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    validator = pipeline.validator("eu")
    outcomes = {outcome(validator, t) for t in tokens}
    validator.close()
    assert {Outcome.INVALID} == outcomes


def test_a_worker_refuses_a_redis_that_may_evict_keys(pipeline: Pipeline) -> None:
    client = pipeline.redis("eu")
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        pipeline.start_worker("eu")
        proc = pipeline.workers["eu"]
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = None
        assert code not in (None, 0)
        assert "maxmemory-policy" in pipeline.worker_log("eu")
        assert "Traceback" not in pipeline.worker_log("eu")
        pipeline.workers.pop("eu")
        pipeline.worker_regions.pop("eu")
    finally:
        client.config_set("maxmemory-policy", "noeviction")
        client.close()


def test_an_evicted_epochs_hash_is_rebuilt_and_no_mass_revoked_token_validates_meanwhile(
    pipeline: Pipeline,
) -> None:
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    tokens = [pipeline.store.issue(USER, i, f"k{i}") for i in range(20)]
    pipeline.wait_applied(pipeline.store.revoke_all().seq)
    client = pipeline.redis("eu")
    validator = pipeline.validator("eu")
    try:
        client.delete(pipeline.keys.epochs)
        seen: set[Outcome] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen |= {outcome(validator, t) for t in tokens[:5]}
            rebuilt = pipeline.state("eu").ready and client.exists(pipeline.keys.epochs)
            if rebuilt and {Outcome.INVALID} == {outcome(validator, t) for t in tokens}:
                break
            time.sleep(0.02)
        assert Outcome.VALID not in seen
        assert {Outcome.INVALID} == {outcome(validator, t) for t in tokens}
    finally:
        validator.close()
        client.close()


def test_a_revocation_in_a_partition_added_to_the_topic_is_applied_and_counted_for_freshness(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # this test plays the relay for the new partition: the real one must not learn of it
    monkeypatch.setattr("producer.kafka_io.PARTITIONS_MAX_AGE_S", 3600.0)
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    victim = pipeline.store.issue(USER, 1, "victim")
    pipeline.wait_applied(victim.seq)
    admin = KafkaAdminClient(bootstrap_servers=pipeline.settings.kafka_bootstrap)
    admin.create_partitions({pipeline.topics.tokens: NewPartitions(total_count=4)})
    admin.close()
    # what a relay that knows the fourth partition publishes there: a revocation, then beats
    revoked = TokenEvent(
        victim.seq + 1000,
        TokenOp.REVOKED,
        victim.token_hash,
        victim.id,
        USER,
        "1",
        "victim",
        ("*",),
        1,
        1,
        None,
        int(time.time() * 1000),
    )
    producer = KafkaProducer(bootstrap_servers=pipeline.settings.kafka_bootstrap)
    _send_signed(producer, pipeline.topics.tokens, revoked, partition=3)
    validator = pipeline.validator("eu")
    try:
        wait_for(lambda: outcome(validator, victim) is not Outcome.VALID, 30, "victim not valid")
        wait_for(lambda: pipeline.state("eu").partition_count == 4, 10, "four partitions")
        assert pipeline.state("eu").freshness_s() is None  # partition 3 has no heartbeat yet
        for _ in range(3):
            _send_signed(
                producer, pipeline.topics.tokens, Heartbeat(3, int(time.time() * 1000), 0), 3
            )
            time.sleep(0.3)
        wait_for(lambda: pipeline.state("eu").freshness_s() is not None, 10, "fresh again")
        assert Outcome.INVALID == outcome(validator, victim)
        assert "partitions_added" in pipeline.worker_log("eu")
    finally:
        producer.close()
        validator.close()


def test_a_running_relay_heartbeats_a_partition_added_to_the_topic_so_the_region_is_fresh_again(
    pipeline: Pipeline,
) -> None:
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    token = pipeline.store.issue(USER, 2, "live")
    pipeline.wait_applied(token.seq)
    admin = KafkaAdminClient(bootstrap_servers=pipeline.settings.kafka_bootstrap)
    admin.create_partitions({pipeline.topics.tokens: NewPartitions(total_count=4)})
    admin.close()
    wait_for(lambda: pipeline.state("eu").partition_count == 4, 15, "four partitions")
    validator = pipeline.validator("eu")
    try:
        # no restart: the relay learns of the partition and certifies it like the others
        wait_for(lambda: outcome(validator, token) is Outcome.VALID, 30, "valid again")
        assert pipeline.state("eu").freshness_s() is not None
    finally:
        validator.close()


def _send_signed(
    producer: KafkaProducer, topic: str, event: TokenEvent | Heartbeat, partition: int
) -> None:
    """Publish ``event`` signed, into ``partition``, as a relay does, and flush."""
    value = encode(event)
    producer.send(
        topic,
        key=event.key,
        value=value,
        headers=KEYRING.sign(event.key, value),
        partition=partition,
    )
    producer.flush()


def _own_stream(directory: Path, kafka_bootstrap: str, topics: Topics, redis_url: str) -> Pipeline:
    """A pipeline with a store (SQLite in ``directory``) and topics of its own, whose region
    ``eu`` is ``redis_url``: several of them make several streams aimed at one Redis."""
    directory.mkdir()
    return Pipeline(
        directory, kafka_bootstrap, f"sqlite:///{directory / 's.db'}", topics, {"eu": redis_url}
    )


def _wait_for_a_new_generation(
    client: redis.Redis, keys: RedisKeys, old_generation: bytes | None
) -> None:
    wait_for(
        lambda: client.hget(keys.meta, "generation") not in (None, old_generation),
        60,
        "a new generation",
    )


def test_a_cache_built_from_another_topic_is_rebuilt_not_adopted(
    tmp_path: Path,
    kafka_bootstrap: str,
    topics: Topics,
    redis_url: str,
) -> None:
    first = _own_stream(tmp_path / "a", kafka_bootstrap, topics, redis_url)
    try:
        first.start_relay()
        first.start_worker("eu")
        first.wait_ready("eu")
        theirs = [first.store.issue(USER, i, f"a{i}") for i in range(40)]
        first.wait_applied(theirs[-1].seq)
        old_generation = first.redis("eu").hget(first.keys.meta, "generation")
    finally:
        first.close()
    other = Topics(prefix=topics.prefix + "b")
    second = _own_stream(tmp_path / "b", kafka_bootstrap, other, redis_url)
    try:
        second.start_relay()
        ours = [second.store.issue(USER, i, f"b{i}") for i in range(5)]
        wait_for(lambda: second.store.position(ours[-1].seq).offset is not None, 30, "published")
        second.start_worker("eu")
        client = second.redis("eu")
        _wait_for_a_new_generation(client, second.keys, old_generation)
        client.close()
        second.wait_ready("eu")
        second.wait_applied(ours[-1].seq)
        validator = second.validator("eu")
        assert [Outcome.VALID] * 5 == [outcome(validator, t) for t in ours]
        assert Outcome.INVALID == outcome(validator, theirs[0])  # not of this stream
        validator.close()
    finally:
        second.close()


def _cli(pipeline: Pipeline, *args: str) -> None:
    env = {k: v for k, v in pipeline.env().items() if k != "TOKENSYNC_REGIONS"}
    result = CliRunner().invoke(root, list(args), env=env, catch_exceptions=False)
    assert 0 == result.exit_code, result.output


def test_after_remove_and_add_on_the_same_redis_readiness_belongs_to_the_new_generation(
    pipeline: Pipeline, own_redis_url: str
) -> None:
    pipeline.start_relay()
    _cli(pipeline, "region", "add", "xx", "--redis", own_redis_url, "--no-wait")
    pipeline.start_worker("xx", own_redis_url)
    keys = pipeline.keys
    client = redis.Redis.from_url(own_redis_url)
    try:
        wait_for(lambda: read_region_state(client, keys, "xx").ready, 60, "xx ready")
        old_generation = client.hget(keys.meta, "generation")
        pipeline.stop_worker("xx")
        _cli(pipeline, "region", "remove", "xx")
        _cli(pipeline, "region", "add", "xx", "--redis", own_redis_url, "--no-wait")
        assert not read_region_state(client, keys, "xx").ready
        pipeline.start_worker("xx", own_redis_url)
        wait_for(lambda: read_region_state(client, keys, "xx").ready, 60, "xx ready again")
        assert old_generation != client.hget(keys.meta, "generation")
    finally:
        client.close()


def test_a_cache_that_applied_more_than_the_topic_holds_is_rebuilt_as_of_a_recreated_topic(
    pipeline: Pipeline,
) -> None:
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    tokens = [pipeline.store.issue(USER, i, f"k{i}") for i in range(10)]
    pipeline.wait_applied(tokens[-1].seq)
    pipeline.stop_worker("eu")
    client = pipeline.redis("eu")
    try:
        old_generation = client.hget(pipeline.keys.meta, "generation")
        # what a cache built from an earlier, longer incarnation of the topic records
        client.hset(pipeline.keys.partitions, "o:0", 10**6)
        pipeline.start_worker("eu")
        _wait_for_a_new_generation(client, pipeline.keys, old_generation)
        pipeline.wait_ready("eu")
        assert int(client.hget(pipeline.keys.partitions, "o:0") or 0) < 10**6
    finally:
        client.close()
    validator = pipeline.validator("eu")
    assert [Outcome.VALID] * 10 == [outcome(validator, t) for t in tokens]
    validator.close()


def test_a_worker_refuses_a_namespace_that_a_worker_of_another_stream_is_applying_to(
    tmp_path: Path,
    kafka_bootstrap: str,
    topics: Topics,
    redis_url: str,
) -> None:
    first = _own_stream(tmp_path / "a", kafka_bootstrap, topics, redis_url)
    second = _own_stream(
        tmp_path / "b", kafka_bootstrap, Topics(prefix=topics.prefix + "b"), redis_url
    )
    try:
        first.start_relay()
        first.start_worker("eu")
        first.wait_ready("eu")
        generation = first.redis("eu").hget(first.keys.meta, "generation")
        second.start_relay()
        second.start_worker("eu")
        proc = second.workers["eu"]
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = None
        log = second.worker_log("eu")
        assert code not in (None, 0), log[-2000:]
        assert "is in use by the worker of" in log
        assert "Traceback" not in log
        second.workers.pop("eu")
        second.worker_regions.pop("eu")
        assert generation == first.redis("eu").hget(first.keys.meta, "generation")
        assert first.state("eu").ready
    finally:
        second.close()
        first.close()


def _ends(pipeline: Pipeline) -> dict[int, int]:
    admin = KafkaAdmin(pipeline.settings.kafka_bootstrap)
    try:
        return admin.end_offsets(pipeline.topics.tokens)
    finally:
        admin.close()


def test_a_token_topic_deleted_and_created_again_has_a_new_topic_id_the_worker_reads(
    kafka_bootstrap: str, topics: Topics
) -> None:
    creator = KafkaAdmin(kafka_bootstrap)
    try:
        creator.ensure_topics(topics, 2)
        first = asyncio.run(stream_source(kafka_bootstrap, topics.tokens))
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            admin.delete_topics([topics.tokens])
            wait_for(lambda: topics.tokens not in admin.list_topics(), 60, "topic deleted")
        finally:
            admin.close()
        creator.ensure_topics(topics, 2)
        second = asyncio.run(stream_source(kafka_bootstrap, topics.tokens))
    finally:
        creator.close()
    assert first.topic_id and second.topic_id
    assert (first.cluster_id, first.topic) == (second.cluster_id, second.topic)
    assert first.topic_id != second.topic_id


def test_a_worker_never_skips_a_revocation_in_a_re_created_token_topic(
    pipeline: Pipeline,
) -> None:
    """A cache bound only to the cluster id and the topic's name adopted a re-created
    topic once it outgrew the cache's offsets, and skipped what the new topic holds below
    them, a revocation included. The cache records Kafka's topic id."""
    pipeline.start_relay_process()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    victim = pipeline.store.issue(USER, 1, "victim")
    pipeline.wait_applied(victim.seq)
    pipeline.stop_worker("eu")
    pipeline.kill_relay_process()
    applied = {p: s.next_offset for p, s in pipeline.state("eu").partitions.items()}

    # the operator deletes the token topic and creates it again (same name, same cluster)
    admin = KafkaAdminClient(bootstrap_servers=pipeline.settings.kafka_bootstrap)
    try:
        admin.delete_topics([pipeline.topics.tokens])
        wait_for(lambda: pipeline.topics.tokens not in admin.list_topics(), 60, "topic deleted")
    finally:
        admin.close()
    creator = KafkaAdmin(pipeline.settings.kafka_bootstrap)
    try:
        creator.ensure_topics(pipeline.topics, pipeline.settings.partitions)
    finally:
        creator.close()
    # a responder revokes the token; the relay publishes it first into the new topic
    revocation = pipeline.store.revoke_token(victim.id)
    pipeline.start_relay_process()
    wait_for(lambda: pipeline.store.position(revocation.seq).offset is not None, 60, "published")
    # the new topic grows past the cache's offsets (heartbeats, and everyday issuing)
    deadline = time.monotonic() + 90
    while not all(_ends(pipeline).get(p, 0) > o for p, o in applied.items()):
        assert time.monotonic() < deadline, (applied, _ends(pipeline))
        for n in range(20):
            pipeline.store.issue(USER, 100 + n, "everyday")
        time.sleep(0.5)

    pipeline.start_worker("eu")
    validator = pipeline.validator("eu")
    try:
        wait_for(
            lambda: validator.validate(victim.plain_text_token).outcome is not Outcome.UNAVAILABLE,
            60,
            "the region answers",
        )
        ends = _ends(pipeline)
        wait_for(
            lambda: all(pipeline.state("eu").has_applied(p, e - 1) for p, e in ends.items()),
            60,
            "the region caught up with the new topic",
        )
        result = validator.validate(victim.plain_text_token)
        assert result.outcome is not Outcome.VALID, (
            f"revoked token {result.outcome.value} after the topic was re-created; cache "
            f"offsets {applied}, new topic's revocation at "
            f"{pipeline.store.position(revocation.seq)}"
        )
    finally:
        validator.close()
