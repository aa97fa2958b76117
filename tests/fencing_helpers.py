"""Two relays of one pipeline fighting over the lease, for the fencing tests: relays built
on the pipeline's store, Kafka and keyring, and publishers that pause a relay inside its
publish (after its lease check) so a test decides what lands first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from producer.publisher import EventPublisher, OutgoingRecord, Placement
from producer.relay import Relay
from producer.relay_lease import RelayLease
from tests.harness import Pipeline
from tests.kafka_helpers import kafka_connector, wait_for

OLD_TTL_MS = 400  # the old holder's lease expires at once when it stops renewing


class NoWaker:
    """No commit wake-ups: the test drives each relay's steps itself."""

    def wait(self, timeout_s: float) -> bool:
        return False

    def close(self) -> None:
        return None


@dataclass
class WrappedPublisher:
    """A real publisher that a subclass pauses around its ``publish``."""

    inner: EventPublisher

    def publish(self, records: Sequence[OutgoingRecord]) -> list[Placement]:
        return self.inner.publish(records)

    def partitions(self) -> int:
        return self.inner.partitions()

    def close(self) -> None:
        self.inner.close()


def kafka_publisher(pipeline: Pipeline) -> EventPublisher:
    """A publisher to the pipeline's token topic."""
    return kafka_connector(pipeline.settings.kafka_bootstrap, pipeline.topics)()


def lease_relay(
    pipeline: Pipeline,
    holder: str,
    publisher: EventPublisher | None = None,
    *,
    ttl_ms: int | None = None,
) -> Relay:
    """A relay of the pipeline under a lease held as ``holder`` (on ``publisher``, or a
    fresh Kafka publisher)."""
    engine = pipeline.store.engine
    if publisher is None:
        connect = kafka_connector(pipeline.settings.kafka_bootstrap, pipeline.topics)
    else:
        given = publisher
        connect = lambda: given  # noqa: E731
    lease = (
        RelayLease(engine, holder) if ttl_ms is None else RelayLease(engine, holder, ttl_ms=ttl_ms)
    )
    return Relay(engine, connect, pipeline.built.keyring, NoWaker(), lease=lease)


def old_and_new(
    pipeline: Pipeline, old_publisher: EventPublisher, new_publisher: EventPublisher | None = None
) -> tuple[Relay, Relay]:
    """The relay that will lose the lease ("old", a short TTL, on ``old_publisher``) and the
    one that takes it over ("new")."""
    old = lease_relay(pipeline, "old", old_publisher, ttl_ms=OLD_TTL_MS)
    return old, lease_relay(pipeline, "new", new_publisher)


def lead_region(pipeline: Pipeline, relay: Relay, region: str = "eu") -> None:
    """``relay`` takes the lease, the region's worker starts, and the relay heartbeats
    until the region is ready (no relay thread runs: the test drives its relays)."""
    assert relay.lease_step()
    pipeline.start_worker(region)

    def beat_and_ready() -> bool:
        relay.heartbeat()
        return pipeline.state(region).ready

    wait_for(beat_and_ready, 90, f"{region} ready")
