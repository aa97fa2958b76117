"""The local stack: real Kafka, Redis and PostgreSQL servers started from local binaries."""

from __future__ import annotations

from stack.kafka import KAFKA_VERSION, KafkaBroker, KafkaJars, default_cache_dir
from stack.launcher import LocalStack, StackOptions
from stack.postgres import PostgresServer
from stack.process import ProcessRecord, free_port, stop_pid
from stack.redis import RedisServer

__all__ = [
    "KAFKA_VERSION",
    "KafkaBroker",
    "KafkaJars",
    "LocalStack",
    "PostgresServer",
    "ProcessRecord",
    "RedisServer",
    "StackOptions",
    "default_cache_dir",
    "free_port",
    "stop_pid",
]
