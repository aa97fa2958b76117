"""The local stack's settings file: what ``stack up`` takes from the environment, what it
records for later commands, and what ``stack status`` shows of it.

One precedence rule: the environment, then the settings file, then the defaults. Every
``TOKENSYNC_*`` value of ``stack up``'s environment is recorded (except where the settings
live: ``STATE_DIR``, ``SETTINGS_FILE``); the endpoints the stack runs itself must be on this
machine.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.errors import ConfigError, StackError
from shared.region_keys import RegionKeys
from shared.settings import (
    PREFIX,
    Region,
    Settings,
    parse_regions,
    read_settings_file,
    redact_regions,
    redact_url,
    write_settings_file,
)

__all__ = [
    "check_local",
    "describe",
    "environment_settings",
    "overridden_note",
    "record_gates",
    "record_settings",
    "running_conflict",
    "set_regions",
]

# Settings about where the settings live: never recorded in the settings file.
_NOT_RECORDED = (PREFIX + "STATE_DIR", PREFIX + "SETTINGS_FILE")
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Endpoints the stack runs itself: the environment may choose their ports, not their hosts.
_OWNED = (PREFIX + "KAFKA_BOOTSTRAP", PREFIX + "REGIONS", PREFIX + "API_URL")


def environment_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``TOKENSYNC_*`` values of ``environ`` that the settings file records."""
    return {
        k: v
        for k, v in environ.items()
        if k.startswith(PREFIX) and k not in _NOT_RECORDED and v != ""  # "" is not set
    }


def check_local(chosen: Mapping[str, str]) -> None:
    """Raise StackError if ``chosen`` points an endpoint the stack runs at another host."""
    bootstrap = chosen.get(PREFIX + "KAFKA_BOOTSTRAP", "")
    api_url = chosen.get(PREFIX + "API_URL", "")
    hosts = {
        "KAFKA_BOOTSTRAP": [h.rpartition(":")[0].strip("[]") for h in bootstrap.split(",") if h],
        "REGIONS": [
            urlsplit(r.redis_url).hostname or "localhost"
            for r in parse_regions(chosen.get(PREFIX + "REGIONS", ""))
        ],
        "API_URL": [urlsplit(api_url).hostname or ""] if api_url else [],
    }
    for key, names in hosts.items():
        remote = [h for h in names if h not in _LOCAL_HOSTS]
        if remote:
            raise StackError(
                f"{PREFIX}{key} in the environment names {remote[0]}, but the local stack runs "
                f"its own servers on this machine: unset it for `tokensync stack up`"
            )


def running_conflict(chosen: Mapping[str, str], recorded: Mapping[str, str], path: Path) -> None:
    """Raise StackError if ``chosen`` (the environment of a ``stack up`` while the stack's
    relay, API, workers or gates run) changes a setting those processes run with: the
    settings file would then point later commands elsewhere than the running processes."""
    if not recorded:
        return
    ours = Settings.from_env(recorded)
    for key in sorted(chosen):
        if key in _OWNED or key in _NOT_RECORDED:
            continue  # endpoints: the running processes keep them (overridden_note)
        if Settings.from_env({**recorded, key: chosen[key]}) != ours:
            raise StackError(
                f"the running stack's processes use {key} from {path}; the environment sets "
                "another: unset it, or run `tokensync stack down` first to change it"
            )


def overridden_note(chosen: Mapping[str, str], settings: Settings) -> str:
    """One line if an endpoint the environment names is not the one the stack runs (its
    port was taken), else ``""``."""
    runs = settings.to_env()
    differ = [
        f"{key}={_shown(key, chosen[key])} (the stack runs {_shown(key, runs.get(key, '-'))})"
        for key in _OWNED
        if key in chosen and chosen[key] != runs.get(key)
    ]
    return f"tokensync: warning: the environment sets {'; '.join(differ)}" if differ else ""


def _shown(key: str, value: str) -> str:
    """An endpoint setting's value fit for the screen: passwords as ``***``."""
    return redact_regions(value) if key == PREFIX + "REGIONS" else redact_url(value)


def record_settings(
    path: Path,
    previous: Mapping[str, str],
    old: Settings,
    *,
    state_dir: Path,
    kafka_port: int,
    regions: Sequence[Region],
    api_port: int,
    kafka_bootstrap: str = "",
) -> Settings:
    """Write the stack's settings: ``previous`` (the file under the environment) with the
    endpoints the stack runs, a signing key and a SQLite store unless chosen."""
    keys = dict(old.signing_keys) or {"local-1": secrets.token_bytes(32)}
    region_keys = _region_keys(old.region_keys, regions)
    database_url = previous.get(PREFIX + "DATABASE_URL") or f"sqlite:///{state_dir / 'store.db'}"
    settings = old.with_overrides(
        kafka_bootstrap=kafka_bootstrap or f"127.0.0.1:{kafka_port}",
        regions=tuple(regions),
        database_url=database_url,
        signing_keys=keys,
        signing_key_id=old.signing_key_id or next(iter(keys)),
        region_keys=region_keys,
        state_dir=state_dir,
        api_url=f"http://127.0.0.1:{api_port}",
    )
    values = {**previous, **settings.to_env()}
    for key in _NOT_RECORDED:
        values.pop(key, None)
    write_settings_file(path, values)
    return settings


def _region_keys(old: RegionKeys, regions: Sequence[Region]) -> RegionKeys:
    """``old`` plus a key of its own for each region that has none (usage reports)."""
    keys: dict[str, dict[str, bytes]] = {}
    for name, kid, secret in old.items():
        keys.setdefault(name, {})[kid] = secret
    for region in regions:
        keys.setdefault(region.name, {f"{region.name}-1": secrets.token_bytes(32)})
    return RegionKeys(keys)


def record_gates(path: Path, settings: Settings, gates: Mapping[str, str]) -> Settings:
    """Record the gates' URLs, and a local introspection client unless one exists."""
    clients = dict(settings.gate_clients) or {"local": secrets.token_urlsafe(24)}
    settings = settings.with_overrides(gate_urls=dict(gates), gate_clients=clients)
    values = read_settings_file(path)
    values.update({k: v for k, v in settings.to_env().items() if k.startswith(PREFIX + "GATE")})
    write_settings_file(path, values)
    return settings


def set_regions(path: Path, add: Region | None = None, drop: str | None = None) -> Settings:
    """Add (or replace) and drop a region in the settings file; the settings it now holds."""
    values = read_settings_file(path)
    regions = [
        r
        for r in Settings.from_env(values).regions
        if r.name not in {drop, add.name if add else None}
    ]
    regions += [add] if add else []
    values[PREFIX + "REGIONS"] = ",".join(f"{r.name}={r.spec}" for r in regions)
    write_settings_file(path, values)
    return Settings.from_env(values)


def describe(path: Path) -> dict[str, Any]:
    """What the settings file says the stack runs with: store (no password), Kafka,
    regions; None where it says nothing."""
    values = read_settings_file(path)
    store = values.get(PREFIX + "DATABASE_URL")
    try:
        regions = parse_regions(values.get(PREFIX + "REGIONS", ""))
    except ConfigError:
        regions = ()
    return {
        "settings_file": str(path) if values else None,
        "store": redact_url(store) if store else None,
        "kafka": values.get(PREFIX + "KAFKA_BOOTSTRAP"),
        "regions": [{"name": r.name, "redis_url": redact_url(r.spec)} for r in regions],
    }
