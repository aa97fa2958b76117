"""After a full demo run, no plaintext token appears in any log, Kafka record, Redis value
or database row."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from shared.keys import Topics
from shared.settings import Settings, read_settings_file
from tests.e2e.test_stack import tokensync
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.e2e
USER = "App\\Models\\User"


def test_no_plaintext_token_is_stored_published_or_logged(tmp_path: Path) -> None:
    try:
        tokensync(tmp_path, "stack", "up", "--regions", "eu,us")
        assert 0 == tokensync(tmp_path, "demo", check=False).returncode
        plains = []
        for i in range(5):
            token = tokensync(
                tmp_path, "token", "issue", "--type", USER, "--id", str(i), "--name", f"secret{i}"
            ).stdout.strip()
            plains.append(token.split("|", 1)[1])
        tokensync(tmp_path, "token", "revoke", token.split("|")[0], "--wait")
        for plain in plains:
            tokensync(tmp_path, "validate", plain, "--region", "eu", check=False)

        settings = Settings.from_env(read_settings_file(tmp_path / ".tokensync/settings.env"))
        haystacks: dict[str, bytes] = {}
        for path in (tmp_path / ".tokensync").rglob("*"):
            if path.is_file() and (
                path.suffix in {".log", ".db", ".env", ".json"} or "-wal" in path.name
            ):
                haystacks[str(path)] = path.read_bytes()
        topics = Topics(settings.topic_prefix)
        for topic in (topics.tokens, topics.dead_letters, topics.usage):
            for record in read_topic(settings.kafka_bootstrap, topic, timeout_s=5):
                blob = (
                    (record.key or b"")
                    + (record.value or b"")
                    + b"".join(v for _, v in record.headers)
                )
                haystacks[f"{topic}:{record.partition}:{record.offset}"] = blob
        for region in settings.regions:
            client = redis.Redis.from_url(region.redis_url)
            for key in client.scan_iter(match="*"):
                kind = client.type(key)
                value = (
                    b"".join(k + v for k, v in client.hgetall(key).items())
                    if kind == b"hash"
                    else client.get(key) or b""
                    if kind == b"string"
                    else b""
                )
                haystacks[f"redis {region.name} {key!r}"] = key + value
            client.close()
        assert len(haystacks) > 20
        leaks = [
            (where, plain[:6])
            for plain in plains
            for where, blob in haystacks.items()
            if plain.encode() in blob
        ]
        assert [] == leaks
    finally:
        tokensync(tmp_path, "stack", "down", check=False)
