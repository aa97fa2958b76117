"""Which stream a region's cache is of: the Kafka cluster id, the topic, and the topic's id."""

from __future__ import annotations

import asyncio

from shared.errors import CacheUnavailableError, ConfigError
from shared.kafka_client import KafkaClientConfig
from shared.logs import get_logger
from workers import internals
from workers.cache import StreamSource

__all__ = ["stream_source"]

log = get_logger(__name__)


async def stream_source(
    kafka_bootstrap: str,
    topic: str,
    attempts: int = 30,
    *,
    client: KafkaClientConfig | None = None,
) -> StreamSource:
    """The Kafka cluster id and the topic a region's cache is of, with the topic's id
    (its incarnation: a topic deleted and re-created gets a new one) when the broker
    speaks metadata version 12 and the topic exists."""
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            found, topic_id = await internals.read_cluster_and_topic_id(
                kafka_bootstrap, topic, client
            )
            if found:
                return StreamSource(found, topic, topic_id)
            last = None
        except ConfigError:
            raise
        except Exception as e:  # any broker error: ask again, then give up with one line
            last = e
        if attempt + 1 < attempts:
            log.warning("kafka_metadata_retry", attempt=attempt + 1, error=str(last or ""))
            await asyncio.sleep(min(0.2 * (attempt + 1), 2.0))  # about a minute in all
    why = f": {last}" if last else " (the broker does not report one)"
    raise CacheUnavailableError(f"the Kafka cluster id at {kafka_bootstrap} could not be read{why}")
