"""The seal key directory (``TOKENSYNC_SEAL_KEYS_DIR``, default ``<state_dir>/seal-keys``).

``keyring.json`` holds public keys only (what regions get): each key's id, raw public key
(base64), status and creation time. ``<kid>.pem`` holds a private key (PKCS#8, owner-only
0600), next to the relay alone. Statuses:

- ``active``: the relay seals with it (exactly one once any key exists);
- ``verifying``: regions accept its seals (a key about to become active, or the previous
  one until ``tokensync keys reseal`` re-sealed what it vouched for);
- ``retired``: accepted nowhere; its private key file is deleted.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from shared.errors import ConfigError
from shared.seal import SealSigner, SealVerifier, key_id_of, load_private_key
from shared.settings import Settings

__all__ = [
    "KeyStatus",
    "SealKey",
    "SealKeyDir",
    "signer_from",
    "verifier_from",
]

KEYRING_FILE = "keyring.json"


class KeyStatus(StrEnum):
    """Where a seal key stands in its life."""

    ACTIVE = "active"
    VERIFYING = "verifying"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class SealKey:
    """One key as ``keyring.json`` lists it (no private part)."""

    kid: str
    public: bytes
    status: KeyStatus
    created_ms: int

    def to_json(self) -> dict[str, Any]:
        return {
            "public": base64.b64encode(self.public).decode(),
            "status": self.status.value,
            "created_at": self.created_ms,
        }


class SealKeyDir:
    """Reads and changes a seal key directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def _keyring(self) -> Path:
        return self.path / KEYRING_FILE

    def private_path(self, kid: str) -> Path:
        """The private key file of ``kid``."""
        return self.path / f"{kid}.pem"

    def entries(self) -> list[SealKey]:
        """Every key listed, oldest first (none when the directory has no keyring)."""
        try:
            data = json.loads(self._keyring.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read {self._keyring}: {e}") from e
        found = []
        try:
            for kid, entry in data.get("keys", {}).items():
                public = base64.b64decode(entry["public"], validate=True)
                status = KeyStatus(entry["status"])
                found.append(SealKey(kid, public, status, int(entry.get("created_at", 0))))
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise ConfigError(f"{self._keyring} is malformed: {e}") from e
        return sorted(found, key=lambda k: (k.created_ms, k.kid))

    def _write(self, keys: list[SealKey]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        body = {"keys": {k.kid: k.to_json() for k in keys}}
        tmp = self._keyring.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
        tmp.replace(self._keyring)

    def generate(self) -> SealKey:
        """A new key pair: active when it is the first, else ``verifying`` (regions learn
        it before ``rotate`` makes the relay seal with it)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        keys = self.entries()
        private = Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        kid = key_id_of(public)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.private_path(kid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        active = any(k.status is KeyStatus.ACTIVE for k in keys)
        key = SealKey(
            kid,
            public,
            KeyStatus.VERIFYING if active else KeyStatus.ACTIVE,
            int(time.time() * 1000),
        )
        self._write([*keys, key])
        return key

    def rotate(self) -> tuple[SealKey | None, SealKey]:
        """Make the newest ``verifying`` key active (generating one if there is none);
        the previous active key stays ``verifying``. Returns (previous, new active)."""
        keys = self.entries()
        current = next((k for k in keys if k.status is KeyStatus.ACTIVE), None)
        waiting = [k for k in keys if k.status is KeyStatus.VERIFYING and k is not current]
        if current is not None:
            waiting = [k for k in waiting if k.created_ms >= current.created_ms]
        if not waiting:
            self.generate()
            return self.rotate() if current is not None else (None, self.entries()[-1])
        new = waiting[-1]
        if not self.private_path(new.kid).exists():
            raise ConfigError(f"no private key file for {new.kid} in {self.path}")
        changed = []
        for k in keys:
            status = k.status
            if k.kid == new.kid:
                status = KeyStatus.ACTIVE
            elif k.status is KeyStatus.ACTIVE:
                status = KeyStatus.VERIFYING
            changed.append(SealKey(k.kid, k.public, status, k.created_ms))
        self._write(changed)
        return current, SealKey(new.kid, new.public, KeyStatus.ACTIVE, new.created_ms)

    def retire(self, kid: str) -> SealKey:
        """Retire ``kid``: accepted nowhere, its private key deleted. The active key cannot
        be retired (rotate first)."""
        keys = self.entries()
        found = next((k for k in keys if k.kid == kid), None)
        if found is None:
            known = ", ".join(k.kid for k in keys) or "none"
            raise ConfigError(f"no seal key {kid!r} (known: {known})")
        if found.status is KeyStatus.ACTIVE:
            raise ConfigError(f"{kid} is the active seal key: rotate to another one first")
        retired = SealKey(kid, found.public, KeyStatus.RETIRED, found.created_ms)
        self._write([retired if k.kid == kid else k for k in keys])
        self.private_path(kid).unlink(missing_ok=True)
        return retired

    def public_keys(self) -> dict[str, bytes]:
        """The public keys regions accept: every key not retired."""
        return {k.kid: k.public for k in self.entries() if k.status is not KeyStatus.RETIRED}

    def signer(self) -> SealSigner:
        """The relay's signer: the active key's private key (owner-only file)."""
        active = next((k for k in self.entries() if k.status is KeyStatus.ACTIVE), None)
        if active is None:
            raise ConfigError(f"no active seal key in {self.path}: run tokensync keys generate")
        path = self.private_path(active.kid)
        try:
            mode = path.stat().st_mode
            pem = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read the seal private key {path}: {e}") from e
        if mode & 0o077:
            raise ConfigError(
                f"the seal private key {path} is readable by others: chmod 600 {path}"
            )
        private = load_private_key(pem)
        signer = SealSigner(active.kid, private)
        return signer


def signer_from(settings: Settings) -> SealSigner:
    """The relay's seal signer of ``settings`` (ConfigError when there is none)."""
    return SealKeyDir(settings.seal_dir).signer()


def verifier_from(settings: Settings) -> SealVerifier:
    """The public keys a region accepts: ``SEAL_PUBLIC_KEYS``, else the key directory's
    keyring (ConfigError when there are none)."""
    folder = SealKeyDir(settings.seal_dir)
    keys = dict(settings.seal_public_keys) or folder.public_keys()
    if not keys:
        raise ConfigError(
            f"signing mode {settings.signing_mode} needs seal public keys: set "
            "TOKENSYNC_SEAL_PUBLIC_KEYS (tokensync keys list --env prints it) or "
            "TOKENSYNC_SEAL_KEYS_DIR"
        )
    retired = [k.kid for k in folder.entries() if k.status is KeyStatus.RETIRED]
    return SealVerifier(keys, retired)
