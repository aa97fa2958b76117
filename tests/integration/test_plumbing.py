"""The real servers answer: Kafka through kafka-python and faust, Redis, SQLAlchemy."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import faust
import pytest
import redis
import sqlalchemy as sa
from faust.contrib.asgi import faust_app_running
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from shared.keys import Topics

pytestmark = pytest.mark.integration


def test_kafka_python_produces_and_a_faust_agent_consumes_every_record(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topics.tokens, num_partitions=3, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    expected = [f"record-{i}".encode() for i in range(20)]
    for i, value in enumerate(expected):
        producer.send(topics.tokens, key=str(i).encode(), value=value)
    producer.flush()
    producer.close()

    received: list[bytes] = []

    async def consume() -> None:
        app = faust.App(
            f"{topics.prefix}-plumbing",
            broker=f"kafka://{kafka_bootstrap}",
            web_enabled=False,
            store="memory://",
            consumer_auto_offset_reset="earliest",
            topic_disable_leader=True,
            datadir=tmp_path / "faust",  # not "<id>-data" in the working directory
        )
        topic = app.topic(topics.tokens, value_type=bytes, value_serializer="raw")

        @app.agent(topic)
        async def collect(stream: faust.Stream[bytes]) -> None:
            async for value in stream:
                received.append(value)

        async with faust_app_running(app, stop_timeout=30):
            for _ in range(600):
                if len(received) >= len(expected):
                    break
                await asyncio.sleep(0.05)

    asyncio.run(consume())
    assert sorted(expected) == sorted(received)


def test_every_region_redis_answers_and_keeps_its_own_data(region_urls: dict[str, str]) -> None:
    clients = {name: redis.Redis.from_url(url) for name, url in region_urls.items()}
    try:
        for name, client in clients.items():
            assert client.ping()
            client.set("who", name)
        assert {name: name.encode() for name in clients} == {
            name: client.get("who") for name, client in clients.items()
        }
    finally:
        for client in clients.values():
            client.close()


def test_sqlalchemy_writes_and_reads_back_on_the_store_database(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    metadata = sa.MetaData()
    table = sa.Table(
        "plumbing",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("value", sa.String(64)),
    )
    metadata.create_all(engine)
    value = uuid.uuid4().hex
    with engine.begin() as conn:
        conn.execute(table.insert().values(value=value))
    with engine.connect() as conn:
        assert [value] == list(conn.execute(sa.select(table.c.value)).scalars())
    engine.dispose()
