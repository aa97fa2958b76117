"""What the ``tokensync`` root knows about each command without importing it.

The base install (``pip install tokensync``) holds what a validating service needs; every
other command's dependencies come with an extra. ``COMMANDS`` names each command's extra and
short help (a test checks them against the commands themselves), so ``tokensync --help`` and
shell completion import no command module, and a command whose extra is missing says in one
line which extra to install.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.util import find_spec

import click

__all__ = [
    "COMMANDS",
    "MODULES_OF_EXTRA",
    "CommandInfo",
    "MissingExtraError",
    "check_extra",
    "missing_extra",
]


@dataclass(frozen=True)
class CommandInfo:
    """What the root knows about a command without importing it: the extra that installs
    its dependencies (None: the base install) and its short help (checked by a test
    against the command's own help)."""

    extra: str | None
    help: str


COMMANDS: Mapping[str, CommandInfo] = {
    "api": CommandInfo("producer", "Serve the token store's HTTP API (OpenAPI at /docs)."),
    "audit": CommandInfo(
        "producer",
        "The audit trail: who did what to the token store, when, why, with which seq.",
    ),
    "backfill": CommandInfo(
        "producer",
        "Publish the token rows that existed before tokensync was installed (resumable; every"
        " store start also does it, without progress).",
    ),
    "bench": CommandInfo(
        "bench",
        "Benchmarks: each prints a table, writes bench/results/<scenario>.json and .png.",
    ),
    "completion": CommandInfo(None, "Print the shell completion script for bash, zsh or fish."),
    "demo": CommandInfo(
        "stack",
        "The end-to-end story on the local stack, with measured revoke-to-denied latencies.",
    ),
    "doctor": CommandInfo(
        "producer",
        "Check this deployment against tokensync's guarantees: store triggers and clock, relay"
        " backlog, each region's Redis and freshness, the Kafka topic.",
    ),
    "findings": CommandInfo(
        "producer",
        "What the detectors found: anomalous token use, invalid bursts, issue-rate jumps.",
    ),
    "gate": CommandInfo(
        "gate",
        "Serve /auth (nginx auth_request, Envoy ext_authz, Traefik ForwardAuth), /introspect"
        " (RFC 7662, HTTP Basic client auth), /healthz and /metrics for REGION.",
    ),
    "keys": CommandInfo(
        "producer", "The relay's Ed25519 seal keys: generate, list, rotate, reseal, retire."
    ),
    "region": CommandInfo("producer", "Add, list, inspect and remove regions."),
    "relay": CommandInfo(
        "producer",
        "Publish the outbox to Kafka (signed, acks=all, in seq order) and send heartbeats; also"
        " apply the regions' usage reports to last_used_at.",
    ),
    "revoke": CommandInfo(
        "producer", "Mass revocation: one epoch event per scope, whatever the number of tokens."
    ),
    "stack": CommandInfo(
        "stack",
        "Run a real local stack: Kafka (KRaft, from its jars), a Redis per region, the processes.",
    ),
    "store": CommandInfo(
        "producer", "The token store: check and repair what tokensync installs in it."
    ),
    "token": CommandInfo(
        "producer", "Issue, find, list, rotate, revoke and prune tokens in the token store."
    ),
    "validate": CommandInfo(
        None, "Validate TOKEN ('-' reads it from stdin, which keeps it out of shell history)."
    ),
    "watch": CommandInfo(
        "producer",
        "A live view: top tokens by requests, invalid rates per region, findings as they arrive.",
    ),
    "worker": CommandInfo(
        "worker", "Apply the token stream to one region's Redis (faust-streaming)."
    ),
}

# The modules (top-level import names) each extra installs, probed before a command runs.
_PRODUCER = (
    "sqlalchemy",
    "alembic",
    "kafka",
    "psycopg",
    "pymysql",
    "fastapi",
    "fastapi_offline",
    "starlette",
    "pydantic",
    "uvicorn",
    "prometheus_client",
    "rich",
    "httpx",
    "cryptography",
)
_WORKER = ("faust", "mode", "aiokafka", "prometheus_client", "rich", "cryptography")
_GATE = ("httptools",)  # uvloop is optional (not on Windows)
MODULES_OF_EXTRA: Mapping[str, tuple[str, ...]] = {
    "producer": _PRODUCER,
    "worker": _WORKER,
    "gate": _GATE,
    "stack": (*_PRODUCER, *_WORKER, *_GATE),
    "bench": (*_PRODUCER, *_WORKER, *_GATE, "matplotlib"),
}
# The first (smallest) extra that installs a module, for a module a command imports lazily.
_EXTRA_OF_MODULE = {
    module: extra
    for extra in reversed(("producer", "worker", "gate", "bench"))
    for module in MODULES_OF_EXTRA[extra]
} | {"uvloop": "gate"}
_OUR_PACKAGES = frozenset({"shared", "producer", "workers", "gate", "stack", "bench"})


def _line(command: str | None, extra: str, module: str) -> str:
    what = f"`tokensync {command}`" if command else "this command"
    return (
        f"{what} needs the [{extra}] extra (module {module!r} is not installed):"
        f" pip install 'tokensync[{extra}]'"
    )


def missing_extra(error: ModuleNotFoundError, command: str | None = None) -> str | None:
    """The one line that names the extra to install for ``error`` (None when the missing
    module is part of tokensync itself or unknown to every extra): the command's own extra
    when it installs the module, else the smallest extra that does."""
    module = (error.name or "").split(".", 1)[0]
    if not module or module in _OUR_PACKAGES:
        return None
    info = COMMANDS.get(command or "")
    own = info.extra if info else None
    extra = own if own and module in MODULES_OF_EXTRA[own] else _EXTRA_OF_MODULE.get(module)
    return _line(command, extra, module) if extra else None


def check_extra(command: str) -> None:
    """Raise MissingExtraError unless the modules of ``command``'s extra are installed (found,
    not imported), so ``tokensync stack up`` says so before it starts a server."""
    info = COMMANDS.get(command)
    if info is None or info.extra is None:
        return
    for module in MODULES_OF_EXTRA[info.extra]:
        if not _installed(module):
            raise MissingExtraError(_line(command, info.extra, module))


def _installed(module: str) -> bool:
    if module in sys.modules:  # imported already (find_spec raises if its __spec__ is None)
        return True
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class MissingExtraError(click.ClickException):
    """A command's dependencies are not installed: one line naming the extra."""
