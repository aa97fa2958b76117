"""Settings: parsed once per entry point from ``TOKENSYNC_*`` variables and a settings file.

One precedence rule in every process: the environment, then the settings file, then the
defaults. The settings file (``.tokensync/settings.env`` in the working directory, or the
path in ``TOKENSYNC_SETTINGS_FILE``) holds ``KEY=VALUE`` lines that ``tokensync stack up``
writes (with every ``TOKENSYNC_*`` value of its environment); a command whose store or
Kafka differs from the running local stack's says so (``local_stack_difference``).

Over 350 lines: one frozen dataclass holding every setting with the parsing of each,
kept together so a newcomer finds any setting in one place; the settings file and the
redaction of what people see are in ``shared.settings_file``, Kafka's client settings in
``shared.kafka_client``.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlsplit

from shared.errors import ConfigError
from shared.kafka_client import KNOWN as KAFKA_CLIENT_KNOWN
from shared.kafka_client import KafkaClientConfig
from shared.region_keys import (
    RegionKey,
    RegionKeys,
    format_region_key,
    format_region_keys,
    parse_region_key,
    parse_region_keys,
)
from shared.region_url import READ_FROM_CHOICES, RegionUrl, hide_password, split_regions
from shared.settings_file import (
    DEFAULT_STATE_DIR,
    PREFIX,
    SETTINGS_FILE_NAME,
    local_stack_difference,
    read_settings_file,
    redact_regions,
    redact_url,
    settings_file_path,
    state_dir_path,
    write_settings_file,
)
from shared.watch_names import WATCH_KNOWN
from shared.watch_settings import WatchSettings

__all__ = [
    "DEFAULT_STATE_DIR",
    "PREFIX",
    "SETTINGS_FILE_NAME",
    "Region",
    "Settings",
    "local_stack_difference",
    "parse_regions",
    "read_settings_file",
    "redact_regions",
    "redact_url",
    "settings_file_path",
    "state_dir_path",
    "write_settings_file",
]


@dataclass(frozen=True)
class Region:
    """A region: a name, the URL of its primary Redis (workers write there) and its read
    replicas' URLs (``shared.region_url``; ``redis_url`` may be given as
    ``PRIMARY;replicas=URL,URL``, which is split here)."""

    name: str
    redis_url: str
    replicas: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never the Redis password (tracebacks, debug lines)
        return f"Region(name={self.name!r}, redis_url={redact_url(self.spec)!r})"

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            raise ConfigError(f"region name {self.name!r} must be letters, digits, '-' or '_'")
        spec = RegionUrl.parse(str(RegionUrl(self.redis_url, self.replicas)), self.name)
        object.__setattr__(self, "redis_url", spec.primary)
        object.__setattr__(self, "replicas", spec.replicas)

    @property
    def url(self) -> RegionUrl:
        """The primary and replicas as one value."""
        return RegionUrl(self.redis_url, self.replicas)

    @property
    def spec(self) -> str:
        """``PRIMARY[;replicas=URL,...]``: what settings and ``--redis`` take (passwords!)."""
        return str(self.url)


def parse_regions(text: str) -> tuple[Region, ...]:
    """Parse ``eu=redis://h:p/0;replicas=redis://r:p/0,us=redis://h:p/0`` into regions,
    rejecting duplicates."""
    regions = [Region(name.strip(), url.strip()) for name, url in split_regions(text)]
    names = [r.name for r in regions]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"region names repeat: {', '.join(repeated)}")
    return tuple(regions)


def _parse_keys(text: str) -> dict[str, bytes]:
    """Parse ``kid:base64secret,kid2:base64secret`` signing keys."""
    keys: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kid, sep, secret = item.partition(":")
        if not sep or not kid:
            raise ConfigError("signing keys must be KEY_ID:BASE64_SECRET, comma separated")
        try:
            raw = base64.b64decode(secret, validate=True)
        except binascii.Error as e:
            raise ConfigError(f"signing key {kid!r} is not valid base64") from e
        if len(raw) < 16:
            raise ConfigError(f"signing key {kid!r} is shorter than 16 bytes")
        keys[kid] = raw
    return keys


SIGNING_MODES = ("hmac", "both", "sealed")


def _signing_mode(text: str) -> str:
    """``TOKENSYNC_SIGNING_MODE``: hmac (default), both or sealed."""
    mode = text.strip().lower() or "hmac"
    if mode not in SIGNING_MODES:
        raise ConfigError(f"{PREFIX}SIGNING_MODE must be hmac, both or sealed, not {text[:32]!r}")
    return mode


def _parse_public_keys(text: str) -> dict[str, bytes]:
    """``TOKENSYNC_SEAL_PUBLIC_KEYS``: ``kid:base64,...`` raw Ed25519 public keys."""
    keys: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kid, sep, encoded = item.partition(":")
        try:
            raw = base64.b64decode(encoded, validate=True) if sep and kid else b""
        except binascii.Error:
            raw = b""
        if len(raw) != 32:
            raise ConfigError(
                f"{PREFIX}SEAL_PUBLIC_KEYS must be KEY_ID:BASE64 (32-byte Ed25519 public "
                "keys), comma separated (tokensync keys list --env prints it)"
            )
        keys[kid] = raw
    return keys


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as e:
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not a number") from e


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not a whole number") from e


def _gate_clients(text: str) -> dict[str, str]:
    """``TOKENSYNC_GATE_CLIENTS``: ``client_id:secret,...`` allowed to call the gate's
    ``/introspect`` (HTTP Basic); secrets of at least 16 characters."""
    clients: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        client, sep, secret = item.partition(":")
        if not sep or not client or ":" in client:
            raise ConfigError(f"{PREFIX}GATE_CLIENTS must be CLIENT_ID:SECRET, comma separated")
        if len(secret) < 16:
            raise ConfigError(f"{PREFIX}GATE_CLIENTS: the secret of {client!r} is under 16 chars")
        clients[client] = secret
    return clients


def _gate_urls(text: str) -> dict[str, str]:
    """``TOKENSYNC_GATES``: ``region=http://host:port,...``, where each region's gate listens
    (``tokensync stack up`` writes it; the demo and the gate benchmark read it)."""
    urls: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        region, sep, url = item.partition("=")
        if not sep or urlsplit(url.strip()).scheme not in {"http", "https"}:
            raise ConfigError(f"{PREFIX}GATES must be REGION=http://host:port, comma separated")
        urls[region.strip()] = url.strip()
    return urls


def _admin_types(text: str) -> tuple[str, ...]:
    """``TOKENSYNC_ADMIN_TYPES``: the tokenable types whose tokens drive the admin API."""
    types = tuple(t.strip() for t in text.split(",") if t.strip())
    if not types:
        raise ConfigError(f"{PREFIX}ADMIN_TYPES must name at least one tokenable type")
    return types


@dataclass(frozen=True)
class Settings:
    """Everything a tokensync process needs to know, parsed once."""

    def __repr__(self) -> str:  # never the database password (tracebacks, debug lines)
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.repr}
        values["database_url"] = redact_url(self.database_url)
        shown = (f"{name}={value!r}" for name, value in values.items())
        return f"Settings({', '.join(shown)})"

    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str = "sqlite:///.tokensync/store.db"
    regions: tuple[Region, ...] = ()
    topic_prefix: str = "tokensync"
    redis_namespace: str = "ts"
    partitions: int = 6
    signing_keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    signing_key_id: str = ""
    # hmac (default) | both | sealed: what the relay emits and what workers accept
    signing_mode: str = "hmac"
    seal_public_keys: Mapping[str, bytes] = field(default_factory=dict)  # regions (env)
    seal_keys_dir: Path | None = None  # `tokensync keys` files; default <state_dir>/seal-keys
    seal_wait_s: float = 5.0  # a record no seal covered by then is dead-lettered
    staleness_budget_s: float = 5.0
    clock_skew_allowance_s: float = 1.0
    heartbeat_interval_s: float = 0.5
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    log_level: str = "info"
    log_format: str = "auto"
    api_url: str = "http://127.0.0.1:8080"
    admin_token: str = field(default="", repr=False)
    token_prefix: str = ""
    token_expiration_minutes: int | None = None
    usage_interval_s: float = 15.0
    link_delays: str = ""
    admin_types: tuple[str, ...] = ("tokensync",)
    allow_eviction: bool = False  # workers accept a Redis whose maxmemory-policy may evict
    store_timezone: str = "UTC"  # zone of the token table's naive timestamps (app.timezone)
    gate_clients: Mapping[str, str] = field(default_factory=dict, repr=False)
    gate_urls: Mapping[str, str] = field(default_factory=dict)
    kafka_client: KafkaClientConfig = field(default_factory=KafkaClientConfig)  # no password
    kafka_replication_factor: int = 0  # new topics; 0: min(3, brokers)
    kafka_min_insync_replicas: int = 0  # new topics; 0: 2 when RF >= 3, else 1
    read_from: str = "replica"  # validators: primary, replica (any one) or a replica's host:port
    server_check_interval_s: float = 0.05  # validators re-read INFO replication (0: every call)
    stage_timing: bool = False  # stamp records with stage times (shared.stages; a debug aid)
    region_key: RegionKey | None = field(default=None, repr=False)  # a worker's own
    region_keys: RegionKeys = field(default_factory=RegionKeys, repr=False)  # the store's
    watch: WatchSettings = field(default_factory=WatchSettings)  # the relay's watch (detectors)

    KNOWN = (
        "KAFKA_BOOTSTRAP",
        "DATABASE_URL",
        "REGIONS",
        "TOPIC_PREFIX",
        "REDIS_NAMESPACE",
        "PARTITIONS",
        "SIGNING_KEYS",
        "SIGNING_KEY_ID",
        "SIGNING_MODE",
        "SEAL_PUBLIC_KEYS",
        "SEAL_KEYS_DIR",
        "SEAL_WAIT",
        "STALENESS_BUDGET",
        "CLOCK_SKEW_ALLOWANCE",
        "HEARTBEAT_INTERVAL",
        "STATE_DIR",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "API_URL",
        "ADMIN_TOKEN",
        "TOKEN_PREFIX",
        "TOKEN_EXPIRATION",
        "USAGE_INTERVAL",
        "LINK_DELAYS",
        "ADMIN_TYPES",
        "ALLOW_EVICTION",
        "STORE_TIMEZONE",
        "GATE_CLIENTS",
        "GATES",
        "READ_FROM",
        "SERVER_CHECK_INTERVAL",
        "SETTINGS_FILE",
        "STAGE_TIMING",
        "REGION_KEY",
        "REGION_KEYS",
        *KAFKA_CLIENT_KNOWN,
        *WATCH_KNOWN,  # Settings.watch (shared.watch_settings)
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from ``TOKENSYNC_*`` entries of ``environ`` alone."""
        unknown = sorted(
            k for k in environ if k.startswith(PREFIX) and k[len(PREFIX) :] not in cls.KNOWN
        )
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]} (known: {', '.join(cls.KNOWN)})")
        get = environ.get
        keys = _parse_keys(get(PREFIX + "SIGNING_KEYS", ""))
        key_id = get(PREFIX + "SIGNING_KEY_ID", "") or (next(iter(keys)) if keys else "")
        if keys and key_id not in keys:
            raise ConfigError(f"{PREFIX}SIGNING_KEY_ID={key_id!r} names no key of SIGNING_KEYS")
        log_format = get(PREFIX + "LOG_FORMAT", "auto")
        if log_format not in {"auto", "json", "console"}:
            raise ConfigError(f"{PREFIX}LOG_FORMAT must be auto, json or console")
        settings = cls(
            kafka_bootstrap=get(PREFIX + "KAFKA_BOOTSTRAP", cls.kafka_bootstrap),
            database_url=get(PREFIX + "DATABASE_URL", cls.database_url),
            regions=parse_regions(get(PREFIX + "REGIONS", "")),
            topic_prefix=get(PREFIX + "TOPIC_PREFIX", cls.topic_prefix),
            redis_namespace=get(PREFIX + "REDIS_NAMESPACE", cls.redis_namespace),
            partitions=_int(environ, "PARTITIONS", cls.partitions),
            signing_keys=keys,
            signing_key_id=key_id,
            signing_mode=_signing_mode(get(PREFIX + "SIGNING_MODE", "")),
            seal_public_keys=_parse_public_keys(get(PREFIX + "SEAL_PUBLIC_KEYS", "")),
            seal_keys_dir=Path(raw_dir) if (raw_dir := get(PREFIX + "SEAL_KEYS_DIR", "")) else None,
            seal_wait_s=_float(environ, "SEAL_WAIT", cls.seal_wait_s),
            staleness_budget_s=_float(environ, "STALENESS_BUDGET", cls.staleness_budget_s),
            clock_skew_allowance_s=_float(
                environ, "CLOCK_SKEW_ALLOWANCE", cls.clock_skew_allowance_s
            ),
            heartbeat_interval_s=_float(environ, "HEARTBEAT_INTERVAL", cls.heartbeat_interval_s),
            state_dir=Path(get(PREFIX + "STATE_DIR", DEFAULT_STATE_DIR)),
            log_level=get(PREFIX + "LOG_LEVEL", cls.log_level).lower(),
            log_format=log_format,
            api_url=get(PREFIX + "API_URL", cls.api_url),
            admin_token=get(PREFIX + "ADMIN_TOKEN", ""),
            token_prefix=get(PREFIX + "TOKEN_PREFIX", ""),
            token_expiration_minutes=_int(environ, "TOKEN_EXPIRATION", 0) or None,
            usage_interval_s=_float(environ, "USAGE_INTERVAL", cls.usage_interval_s),
            link_delays=get(PREFIX + "LINK_DELAYS", ""),
            admin_types=_admin_types(get(PREFIX + "ADMIN_TYPES", "tokensync")),
            allow_eviction=_bool(environ, "ALLOW_EVICTION"),
            store_timezone=get(PREFIX + "STORE_TIMEZONE", "UTC").strip() or "UTC",
            gate_clients=_gate_clients(get(PREFIX + "GATE_CLIENTS", "")),
            gate_urls=_gate_urls(get(PREFIX + "GATES", "")),
            kafka_client=KafkaClientConfig.from_env(environ),
            kafka_replication_factor=_int(environ, "KAFKA_REPLICATION_FACTOR", 0),
            kafka_min_insync_replicas=_int(environ, "KAFKA_MIN_INSYNC_REPLICAS", 0),
            read_from=_read_from(get(PREFIX + "READ_FROM", "")),
            server_check_interval_s=_float(
                environ, "SERVER_CHECK_INTERVAL", cls.server_check_interval_s
            ),
            stage_timing=_bool(environ, "STAGE_TIMING"),
            region_key=parse_region_key(get(PREFIX + "REGION_KEY", ""), PREFIX + "REGION_KEY"),
            region_keys=parse_region_keys(get(PREFIX + "REGION_KEYS", ""), PREFIX + "REGION_KEYS"),
            watch=WatchSettings.from_env(environ),
        )
        _check_zone(settings.store_timezone)
        if "|" in settings.token_prefix:
            raise ConfigError(f"{PREFIX}TOKEN_PREFIX must not contain '|'")
        if settings.partitions < 1:
            raise ConfigError(f"{PREFIX}PARTITIONS must be at least 1")
        for name, count in (
            ("KAFKA_REPLICATION_FACTOR", settings.kafka_replication_factor),
            ("KAFKA_MIN_INSYNC_REPLICAS", settings.kafka_min_insync_replicas),
        ):
            if count < 0:
                raise ConfigError(f"{PREFIX}{name} must be at least 1 (or empty for the default)")
        for name, value, least in (
            ("STALENESS_BUDGET", settings.staleness_budget_s, "positive"),
            ("CLOCK_SKEW_ALLOWANCE", settings.clock_skew_allowance_s, "zero or more"),
            ("HEARTBEAT_INTERVAL", settings.heartbeat_interval_s, "positive"),
            ("USAGE_INTERVAL", settings.usage_interval_s, "positive"),
            ("SEAL_WAIT", settings.seal_wait_s, "positive"),
            ("SERVER_CHECK_INTERVAL", settings.server_check_interval_s, "zero or more"),
        ):
            if not math.isfinite(value) or value < 0 or (value == 0 and least == "positive"):
                raise ConfigError(f"{PREFIX}{name}={value!r} must be {least} finite seconds")
        if settings.server_check_interval_s >= settings.staleness_budget_s:
            raise ConfigError(
                f"{PREFIX}SERVER_CHECK_INTERVAL must be under {PREFIX}STALENESS_BUDGET"
            )
        if settings.token_expiration_minutes is not None and settings.token_expiration_minutes < 0:
            raise ConfigError(f"{PREFIX}TOKEN_EXPIRATION must be minutes, zero or more")
        return settings

    @classmethod
    def load(cls, environ: Mapping[str, str], cwd: Path | None = None) -> Settings:
        """Settings from the settings file (if any) overlaid with ``environ``."""
        path = settings_file_path(cwd or Path.cwd(), environ)
        recorded = read_settings_file(path)
        for key in sorted(recorded):
            if key not in environ and key[len(PREFIX) :] not in cls.KNOWN:
                raise ConfigError(
                    f"unknown setting {key} in {path} (written by another tokensync version? "
                    "remove that line)"
                )
        # an empty variable (``export X=``, compose's ``${X:-}``) is not set: it never
        # blanks the file's value (numbers treat "" as unset already)
        given = {k: v for k, v in environ.items() if not (k.startswith(PREFIX) and v == "")}
        return cls.from_env({**recorded, **given})

    def region(self, name: str) -> Region:
        """The region called ``name``, or a ConfigError listing the known ones."""
        for region in self.regions:
            if region.name == name:
                return region
        known = ", ".join(r.name for r in self.regions) or "none configured"
        raise ConfigError(f"unknown region {name!r} (known: {known})")

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields replaced (tests and the stack launcher use this)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def require_signing_keys(self) -> None:
        """Raise ConfigError unless signing keys are configured."""
        if not self.signing_keys:
            raise ConfigError(
                f"no signing keys: set {PREFIX}SIGNING_KEYS=KEY_ID:BASE64_SECRET "
                "(tokensync stack up writes one into .tokensync/settings.env)"
            )

    @property
    def seal_dir(self) -> Path:
        """Where ``tokensync keys`` keeps the seal keys (``SEAL_KEYS_DIR``)."""
        return self.seal_keys_dir or self.state_dir / "seal-keys"

    def to_env(self) -> dict[str, str]:
        """The ``TOKENSYNC_*`` variables that reproduce these settings (secrets included)."""
        env = {
            "KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "DATABASE_URL": self.database_url,
            "REGIONS": ",".join(f"{r.name}={r.spec}" for r in self.regions),
            "TOPIC_PREFIX": self.topic_prefix,
            "REDIS_NAMESPACE": self.redis_namespace,
            "PARTITIONS": str(self.partitions),
            "SIGNING_KEYS": ",".join(
                f"{kid}:{base64.b64encode(raw).decode()}" for kid, raw in self.signing_keys.items()
            ),
            "SIGNING_KEY_ID": self.signing_key_id,
            "SIGNING_MODE": "" if self.signing_mode == "hmac" else self.signing_mode,
            "SEAL_PUBLIC_KEYS": ",".join(
                f"{kid}:{base64.b64encode(raw).decode()}"
                for kid, raw in self.seal_public_keys.items()
            ),
            "SEAL_KEYS_DIR": str(self.seal_keys_dir or ""),
            "SEAL_WAIT": "" if self.seal_wait_s == 5.0 else repr(self.seal_wait_s),
            "STALENESS_BUDGET": repr(self.staleness_budget_s),
            "CLOCK_SKEW_ALLOWANCE": repr(self.clock_skew_allowance_s),
            "HEARTBEAT_INTERVAL": repr(self.heartbeat_interval_s),
            "STATE_DIR": str(self.state_dir),
            "LOG_LEVEL": self.log_level,
            "LOG_FORMAT": self.log_format,
            "API_URL": self.api_url,
            "ADMIN_TOKEN": self.admin_token,
            "TOKEN_PREFIX": self.token_prefix,
            "TOKEN_EXPIRATION": str(self.token_expiration_minutes or ""),
            "USAGE_INTERVAL": repr(self.usage_interval_s),
            "LINK_DELAYS": self.link_delays,
            "ADMIN_TYPES": ",".join(self.admin_types),
            "ALLOW_EVICTION": "true" if self.allow_eviction else "",
            "STORE_TIMEZONE": "" if self.store_timezone == "UTC" else self.store_timezone,
            "GATE_CLIENTS": ",".join(f"{c}:{s}" for c, s in self.gate_clients.items()),
            "GATES": ",".join(f"{r}={u}" for r, u in self.gate_urls.items()),
            "KAFKA_REPLICATION_FACTOR": str(self.kafka_replication_factor or ""),
            "KAFKA_MIN_INSYNC_REPLICAS": str(self.kafka_min_insync_replicas or ""),
            "READ_FROM": "" if self.read_from == "replica" else self.read_from,
            "SERVER_CHECK_INTERVAL": ""
            if self.server_check_interval_s == 0.05
            else repr(self.server_check_interval_s),
            "STAGE_TIMING": "true" if self.stage_timing else "",
            "REGION_KEY": format_region_key(self.region_key),
            "REGION_KEYS": format_region_keys(self.region_keys),
        }
        return (
            {PREFIX + k: v for k, v in env.items() if v != ""}
            | self.kafka_client.to_env()
            | self.watch.to_env()
        )


def _read_from(raw: str) -> str:
    """``TOKENSYNC_READ_FROM``: primary, replica (the default) or a replica's host:port."""
    value = raw.strip() or "replica"
    if value in READ_FROM_CHOICES or value.startswith("/"):
        return value
    host, sep, port = value.rpartition(":")
    if "://" in value or "@" in value or not sep or not host or not port.isdigit():
        raise ConfigError(  # a URL given by mistake: never its password
            f"{PREFIX}READ_FROM must be primary, replica or a replica's host:port, "
            f"not {hide_password(value)[:64]!r}"
        )
    return value


def _check_zone(name: str) -> None:
    """An IANA time zone name, or a ConfigError."""
    import zoneinfo

    if name.upper() in {"UTC", "Z", "ETC/UTC"}:
        return
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(
            f"{PREFIX}STORE_TIMEZONE={name!r} is no IANA time zone (e.g. UTC, Europe/Berlin)"
        ) from e


def _bool(environ: Mapping[str, str], name: str) -> bool:
    raw = environ.get(PREFIX + name, "").strip().lower()
    if raw in {"", "0", "false", "no", "off"}:
        return False
    if raw in {"1", "true", "yes", "on"}:
        return True
    raise ConfigError(f"{PREFIX}{name} must be true or false, not {raw[:32]!r}")
