"""Kafka's topic id (one per incarnation of a topic), read with aiokafka's protocol types.

A topic deleted and re-created under the same name gets a new id. aiokafka 0.14's own
``MetadataRequest`` stops at version 5, before topic ids (version 10); this module
declares the version 12 request and response (flexible encoding) with aiokafka's
protocol types, so that workers never import kafka-python. A broker that does not
speak version 12 yields no id (``""``).
"""

from __future__ import annotations

import uuid
from io import BytesIO
from typing import Any

from aiokafka.protocol.abstract import AbstractType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

__all__ = ["TopicIdRequest", "topic_id_of"]

_NO_ID = bytes(16)


class _Uuid(AbstractType[bytes]):  # type: ignore[misc]  # aiokafka is untyped here
    """Kafka's UUID: 16 raw bytes."""

    @classmethod
    def encode(cls, value: bytes) -> bytes:
        if len(value) != 16:
            raise ValueError(f"a UUID is 16 bytes, not {len(value)}")
        return value

    @classmethod
    def decode(cls, data: BytesIO) -> bytes:
        value = data.read(16)
        if len(value) != 16:
            raise ValueError("Buffer underrun decoding a UUID")
        return value


class _MetadataResponseV12(Response):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 12
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            CompactArray(
                ("node_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("rack", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            CompactArray(
                ("error_code", Int16),
                ("name", CompactString("utf-8")),
                ("topic_id", _Uuid),
                ("is_internal", Boolean),
                (
                    "partitions",
                    CompactArray(
                        ("error_code", Int16),
                        ("partition_index", Int32),
                        ("leader_id", Int32),
                        ("leader_epoch", Int32),
                        ("replica_nodes", CompactArray(Int32)),
                        ("isr_nodes", CompactArray(Int32)),
                        ("offline_replicas", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("topic_authorized_operations", Int32),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _MetadataRequestV12(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 3
    API_VERSION = 12
    RESPONSE_TYPE = _MetadataResponseV12
    SCHEMA = Schema(
        (
            "topics",
            CompactArray(
                ("topic_id", _Uuid),
                ("name", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("allow_auto_topic_creation", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class TopicIdRequest(Request[_MetadataRequestV12]):  # type: ignore[misc]
    """Metadata (version 12) of one topic, by name: its id, and the cluster id."""

    API_KEY = 3

    def __init__(self, topic: str) -> None:
        self._topic = topic

    def build(self, request_struct_class: type[_MetadataRequestV12]) -> _MetadataRequestV12:
        return request_struct_class([(_NO_ID, self._topic, {})], False, False, {})


def topic_id_of(response: Any, topic: str) -> str:
    """The id of ``topic`` in a ``TopicIdRequest`` response (hex); "" when the broker
    reports none (an unknown topic, an error)."""
    for entry in getattr(response, "topics", None) or ():
        error_code, name, raw = entry[0], entry[1], entry[2]
        if name == topic and error_code == 0 and raw != _NO_ID:
            return str(uuid.UUID(bytes=bytes(raw)))
    return ""
