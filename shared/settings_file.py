"""The settings file and what people see of settings: where the file lives, reading and
writing it (owner-only), URLs and regions with their passwords shown as ``***``, and the
one-line note when a command's store or Kafka differs from the running local stack's.
(Split from ``shared.settings``, which re-exports these names.)"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from shared.errors import ConfigError

if TYPE_CHECKING:
    from shared.settings import Settings

__all__ = [
    "DEFAULT_STATE_DIR",
    "PREFIX",
    "SETTINGS_FILE_NAME",
    "local_stack_difference",
    "read_settings_file",
    "redact_regions",
    "redact_url",
    "settings_file_path",
    "state_dir_path",
    "write_settings_file",
]

DEFAULT_STATE_DIR = ".tokensync"
SETTINGS_FILE_NAME = "settings.env"
PREFIX = "TOKENSYNC_"


def redact_regions(text: str) -> str:
    """A ``NAME=URL,...`` regions value with each URL's password shown as ``***``."""
    items = []
    for item in text.split(","):
        name, sep, url = item.partition("=")
        # a bare URL (a replica continuing the previous region's list) is redacted whole
        items.append(f"{name}={redact_url(url)}" if sep and "://" not in name else redact_url(item))
    return ",".join(items)


def state_dir_path(cwd: Path, environ: Mapping[str, str]) -> Path:
    """The local state folder: ``TOKENSYNC_STATE_DIR`` (relative to ``cwd``) or ``.tokensync``."""
    return cwd / environ.get(PREFIX + "STATE_DIR", DEFAULT_STATE_DIR)


def settings_file_path(cwd: Path, environ: Mapping[str, str]) -> Path:
    """Where ``tokensync stack up`` writes, and later commands read, the settings file:
    ``TOKENSYNC_SETTINGS_FILE`` (relative to ``cwd``) or ``settings.env`` in the state folder."""
    explicit = environ.get(PREFIX + "SETTINGS_FILE", "")
    return cwd / explicit if explicit else state_dir_path(cwd, environ) / SETTINGS_FILE_NAME


# a password passed as a query parameter (libpq and redis-py both take ``?password=``)
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:ssl)?(?:password|passwd|pwd)=)[^&#]*")


def redact_url(url: str) -> str:
    """``url`` with its password (if any, also ``?password=``) shown as ``***``: fit for
    screens and logs (a region's ``PRIMARY;replicas=URL,URL``: each URL's)."""
    primary, mark, replicas = url.partition(";replicas=")
    if mark:
        return f"{redact_url(primary)}{mark}{','.join(map(redact_url, replicas.split(',')))}"
    url = _QUERY_PASSWORD.sub(r"\1***", url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # unparsable (an unclosed '['): hide everything before the last '@'
        head, at, host = url.rpartition("@")
        return f"{head.partition('://')[0]}://***@{host}" if at and "://" in head else url
    if not password:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def _stack_running(state_dir: Path) -> bool:
    """Whether the local stack recorded in ``state_dir/stack.json`` has a live broker
    (the file the ``stack`` package writes: ``{"processes": [{"name", "pid", ...}]}``)."""
    try:
        data = json.loads((state_dir / "stack.json").read_text())
        pids = [int(p["pid"]) for p in data.get("processes", []) if p.get("name") == "kafka"]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return False
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            return True
        return True
    return False


def local_stack_difference(settings: Settings, environ: Mapping[str, str], cwd: Path) -> str:
    """One line if ``settings`` use another store or Kafka than the local stack running in
    ``cwd`` (the environment overrides its settings file), else ``""``."""
    stack = read_settings_file(settings_file_path(cwd, environ))
    if not stack or not _stack_running(state_dir_path(cwd, environ)):
        return ""
    differs = []
    for key, label, ours in (
        ("DATABASE_URL", "store", settings.database_url),
        ("KAFKA_BOOTSTRAP", "Kafka", settings.kafka_bootstrap),
    ):
        theirs = stack.get(PREFIX + key)
        if theirs is not None and theirs != ours:
            differs.append(
                f"{label} {redact_url(ours)} (the local stack's is {redact_url(theirs)})"
            )
    if not differs:
        return ""
    return (
        f"tokensync: note: this command uses {' and '.join(differs)}; "
        f"the environment overrides {settings_file_path(cwd, environ)}"
    )


def read_settings_file(path: Path) -> dict[str, str]:
    """Read ``KEY=VALUE`` lines (``#`` comments allowed); a missing file is empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read settings file {path}: {e.strerror}") from e
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE")
        if not key.startswith(PREFIX):
            raise ConfigError(f"{path}:{number}: {key[:40]!r} is no {PREFIX}* setting")
        values[key] = value.strip()
    return values


def write_settings_file(path: Path, values: Mapping[str, str]) -> None:
    """Write ``KEY=VALUE`` lines readable only by the owner (the file holds secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "# written by tokensync; environment variables override these\n"
    body += "".join(f"{k}={v}\n" for k, v in sorted(values.items()))
    # a temp file of its own, created owner-only (mkstemp: O_EXCL, 0600): never a stale one
    # left readable by all, nor one another writer is filling at the same time
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
        tmp.replace(path)
        path.with_suffix(".tmp").unlink(missing_ok=True)  # older versions' temp file
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
