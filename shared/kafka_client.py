"""How every Kafka client of tokensync connects: security protocol, SASL and TLS.

``KafkaClientConfig`` is parsed once with the other settings (``TOKENSYNC_KAFKA_*``) and is
the one place that turns them into constructor arguments: ``kafka_python_kwargs`` for
kafka-python (relay, usage reader, admin, doctor, test helpers), ``aiokafka_kwargs`` for
aiokafka clients, ``faust_kwargs`` for a faust app (``broker_credentials``). The SASL
password is never part of a repr, a log line or an error message.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import ConfigError

__all__ = [
    "MECHANISMS",
    "PROTOCOLS",
    "AuthFailures",
    "KafkaClientConfig",
    "auth_failures",
    "replication_defaults",
]

PREFIX = "TOKENSYNC_"
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")

#: The settings this module reads (without the ``TOKENSYNC_`` prefix).
KNOWN = (
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SSL_CAFILE",
    "KAFKA_SSL_CERTFILE",
    "KAFKA_SSL_KEYFILE",
    "KAFKA_REPLICATION_FACTOR",
    "KAFKA_MIN_INSYNC_REPLICAS",
)


def replication_defaults(brokers: int, configured_rf: int, configured_isr: int) -> tuple[int, int]:
    """``(replication factor, min.insync.replicas)`` for new topics: the configured values,
    else RF min(3, brokers) and min ISR 2 when RF >= 3, else 1."""
    rf = configured_rf or max(1, min(3, brokers))
    isr = configured_isr or (2 if rf >= 3 else 1)
    return rf, isr


class AuthFailures(logging.Handler):
    """Notes the authentication failures a Kafka library logs: kafka-python and aiokafka
    retry a refused login during bootstrap and then raise a plain timeout.

    A broker answers a wrong password with an error and closes the connection shortly
    after; a client sometimes sees only the close. A connection lost after the SASL
    exchange began, and before any succeeded, therefore counts as a refusal too."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []
        self._exchanging = False
        self._authenticated = False

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "SaslAuthenticationFailed" in text or "Authentication failed" in text:
            self.seen.append(text)
        elif ".sasl" in record.name or "SaslHandshake" in text or "SaslAuthenticate" in text:
            self._exchanging = True
        elif "authenticated" in text.lower() and "not" not in text.lower():
            self._authenticated = True
        elif self._exchanging and not self._authenticated and "disconnect" in text.lower():
            self.seen.append(text)

    @property
    def refused(self) -> bool:
        """Whether the cluster refused the login during the block."""
        return bool(self.seen)


@contextmanager
def auth_failures(library: str) -> Iterator[AuthFailures]:
    """Collect ``library``'s logged login refusals for the duration of the block, and keep
    its log lines of that attempt out of the output (the caller reports in one line)."""
    logger = logging.getLogger(library)
    handler = AuthFailures()
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)
        logger.propagate = propagate


@dataclass(frozen=True)
class KafkaClientConfig:
    """Security settings shared by every Kafka client (defaults: PLAINTEXT, no auth)."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""

    def __post_init__(self) -> None:
        name = PREFIX + "KAFKA_"
        if self.security_protocol not in PROTOCOLS:
            raise ConfigError(
                f"{name}SECURITY_PROTOCOL={self.security_protocol!r} must be one of "
                + ", ".join(PROTOCOLS)
            )
        if self.sasl:
            if self.sasl_mechanism not in MECHANISMS:
                raise ConfigError(
                    f"{name}SASL_MECHANISM={self.sasl_mechanism!r} must be one of "
                    + ", ".join(MECHANISMS)
                )
            if not self.sasl_username or not self.sasl_password:
                raise ConfigError(
                    f"{name}SECURITY_PROTOCOL={self.security_protocol} needs "
                    f"{name}SASL_USERNAME and {name}SASL_PASSWORD"
                )
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password:
            raise ConfigError(
                f"{name}SASL_* settings need {name}SECURITY_PROTOCOL=SASL_PLAINTEXT or SASL_SSL"
            )
        files = (
            ("SSL_CAFILE", self.ssl_cafile),
            ("SSL_CERTFILE", self.ssl_certfile),
            ("SSL_KEYFILE", self.ssl_keyfile),
        )
        if not self.tls and any(value for _, value in files):
            raise ConfigError(f"{name}SSL_* settings need {name}SECURITY_PROTOCOL=SSL or SASL_SSL")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ConfigError(f"{name}SSL_CERTFILE and {name}SSL_KEYFILE go together")
        for key, value in files:
            if value and not Path(value).is_file():
                raise ConfigError(f"{name}{key}={value!r} is not a readable file")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> KafkaClientConfig:
        """Read the ``TOKENSYNC_KAFKA_*`` security settings of ``environ``."""

        def get(key: str) -> str:
            return environ.get(PREFIX + "KAFKA_" + key, "").strip()

        return cls(
            security_protocol=get("SECURITY_PROTOCOL").upper() or "PLAINTEXT",
            sasl_mechanism=get("SASL_MECHANISM").upper(),
            sasl_username=get("SASL_USERNAME"),
            sasl_password=environ.get(PREFIX + "KAFKA_SASL_PASSWORD", ""),
            ssl_cafile=get("SSL_CAFILE"),
            ssl_certfile=get("SSL_CERTFILE"),
            ssl_keyfile=get("SSL_KEYFILE"),
        )

    def to_env(self) -> dict[str, str]:
        """The ``TOKENSYNC_KAFKA_*`` variables (without defaults) that reproduce this."""
        values = {
            "SECURITY_PROTOCOL": ""
            if self.security_protocol == "PLAINTEXT"
            else self.security_protocol,
            "SASL_MECHANISM": self.sasl_mechanism,
            "SASL_USERNAME": self.sasl_username,
            "SASL_PASSWORD": self.sasl_password,
            "SSL_CAFILE": self.ssl_cafile,
            "SSL_CERTFILE": self.ssl_certfile,
            "SSL_KEYFILE": self.ssl_keyfile,
        }
        return {PREFIX + "KAFKA_" + k: v for k, v in values.items() if v}

    @property
    def sasl(self) -> bool:
        """Whether clients authenticate with SASL."""
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        """Whether connections are TLS."""
        return self.security_protocol in {"SSL", "SASL_SSL"}

    def describe(self) -> str:
        """A line for logs and screens (no password)."""
        text = self.security_protocol
        if self.sasl:
            text += f" {self.sasl_mechanism} as {self.sasl_username}"
        return text

    def refused(self, bootstrap: str) -> ConfigError:
        """The one-line error for credentials the cluster refused (retrying cannot help)."""
        return ConfigError(
            f"Kafka at {bootstrap} refused {self.describe()}: authentication failed "
            f"(check {PREFIX}KAFKA_SASL_USERNAME, {PREFIX}KAFKA_SASL_PASSWORD and "
            f"{PREFIX}KAFKA_SASL_MECHANISM)"
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context from the CA, certificate and key files (None without TLS)."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ssl_cafile or None)
            if self.ssl_certfile:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"{PREFIX}KAFKA_SSL_* files cannot be loaded: {e}") from e
        return context

    def kafka_python_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of kafka-python's producer, consumer and admin client."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl:
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if self.tls:
            kwargs.update(ssl_check_hostname=True)
            if self.ssl_cafile:
                kwargs["ssl_cafile"] = self.ssl_cafile
            if self.ssl_certfile:
                kwargs.update(ssl_certfile=self.ssl_certfile, ssl_keyfile=self.ssl_keyfile)
        return kwargs

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of aiokafka's clients."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl:
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        return kwargs

    def faust_kwargs(self) -> dict[str, Any]:
        """``faust.App`` arguments: ``broker_credentials`` unless PLAINTEXT."""
        import faust
        from faust.types.auth import SASLMechanism

        if self.security_protocol == "PLAINTEXT":
            return {}
        context = self.ssl_context()
        credentials: Any
        if self.sasl:
            credentials = faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password,
                mechanism=SASLMechanism(self.sasl_mechanism),
                ssl_context=context,  # faust: SASL_SSL with a context, else SASL_PLAINTEXT
            )
        else:
            credentials = faust.SSLCredentials(context)
        return {"broker_credentials": credentials}
