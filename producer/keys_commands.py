"""``tokensync keys``: the relay's Ed25519 seal keys (``shared.seal_keys``).

Rotation, step by step: ``keys generate`` (a new key, ``verifying``: give regions its
public key), ``keys rotate`` (the relay seals with it; the old one still verifies),
``keys reseal`` (re-seal what only the old key vouches for), ``keys retire OLD``.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import TYPE_CHECKING

import click

from producer.cli_support import Command, Group
from shared.cli import CliContext, emit, json_option, pass_cli
from shared.errors import UsageError

if TYPE_CHECKING:
    from shared.seal_keys import SealKeyDir

__all__ = ["keys"]


def _env_line(public: dict[str, bytes]) -> str:
    value = ",".join(f"{kid}:{base64.b64encode(raw).decode()}" for kid, raw in public.items())
    return f"TOKENSYNC_SEAL_PUBLIC_KEYS={value}"


def _dir(cli: CliContext) -> SealKeyDir:
    from shared.seal_keys import SealKeyDir

    return SealKeyDir(cli.settings.seal_dir)


@click.group(
    cls=Group,
    epilog="\b\nExamples:\n  tokensync keys generate\n  tokensync keys list --env\n"
    "  tokensync keys reseal",
)
def keys() -> None:
    """The relay's Ed25519 seal keys: generate, list, rotate, reseal, retire."""


@keys.command("generate", cls=Command, epilog="\b\nExamples:\n  tokensync keys generate")
@json_option
@pass_cli
def generate(cli: CliContext, *, as_json: bool) -> None:
    """Create a seal key pair in TOKENSYNC_SEAL_KEYS_DIR: active if it is the first, else
    verifying (regions learn its public key before `keys rotate` signs with it)."""
    folder = _dir(cli)
    key = folder.generate()
    public = folder.public_keys()
    emit(
        as_json,
        {
            "key_id": key.kid,
            "status": key.status.value,
            "public_key": base64.b64encode(key.public).decode(),
            "private_key_file": str(folder.private_path(key.kid)),
            "regions_env": _env_line(public),
        },
        [
            f"generated {key.kid} ({key.status.value}); private key "
            f"{folder.private_path(key.kid)} (owner-only: keep it on the relay's host)",
            "give the regions' workers the public keys:",
            f"  {_env_line(public)}",
        ],
    )


@keys.command("list", cls=Command, epilog="\b\nExamples:\n  tokensync keys list --env")
@click.option("--env", "as_env", is_flag=True, help="Print the regions' setting line only.")
@json_option
@pass_cli
def list_keys(cli: CliContext, *, as_env: bool, as_json: bool) -> None:
    """List the seal keys (public parts): id, status, created."""
    folder = _dir(cli)
    entries = folder.entries()
    if as_env:
        emit(
            as_json,
            {"regions_env": _env_line(folder.public_keys())},
            _env_line(folder.public_keys()),
        )
        return
    rows = [
        {
            "key_id": k.kid,
            "status": k.status.value,
            "created_at": dt.datetime.fromtimestamp(k.created_ms / 1000, dt.UTC).isoformat(),
            "public_key": base64.b64encode(k.public).decode(),
        }
        for k in entries
    ]
    lines = [f"{r['key_id']:<22} {r['status']:<10} {r['created_at']}" for r in rows] or [
        f"no seal keys in {folder.path} (tokensync keys generate)"
    ]
    emit(as_json, rows, lines)


@keys.command("rotate", cls=Command, epilog="\b\nExamples:\n  tokensync keys rotate")
@json_option
@pass_cli
def rotate(cli: CliContext, *, as_json: bool) -> None:
    """Make the newest verifying key active (generating one if there is none); the
    previous active key keeps verifying. Restart the relay to seal with it."""
    previous, active = _dir(cli).rotate()
    before = previous.kid if previous else None
    emit(
        as_json,
        {"active": active.kid, "previous": before},
        [
            f"active seal key: {active.kid} (was {before or 'none'}); restart the relay",
            "then: tokensync keys reseal, and tokensync keys retire OLD once doctor is clean",
        ],
    )


@keys.command(
    "retire", cls=Command, epilog="\b\nExamples:\n  tokensync keys retire ed25519-0123abcd"
)
@click.argument("key_id")
@click.option(
    "--force",
    is_flag=True,
    help="Retire even when live records only this key vouches for (regions bootstrapping "
    "later dead-letter them).",
)
@json_option
@pass_cli
def retire(cli: CliContext, *, key_id: str, force: bool, as_json: bool) -> None:
    """Retire KEY_ID: no region accepts its seals any more; its private key is deleted.
    Remove it from the regions' TOKENSYNC_SEAL_PUBLIC_KEYS too."""
    folder = _dir(cli)
    if not force:
        from producer.seal_state import scan_topic

        only = scan_topic(cli.settings).by_voucher().get(key_id, 0)
        if only:
            raise UsageError(
                f"{only} live record(s) only {key_id} vouches for: run tokensync keys "
                "reseal first (or pass --force)"
            )
    retired = folder.retire(key_id)
    emit(
        as_json,
        {"retired": retired.kid, "regions_env": _env_line(folder.public_keys())},
        [f"retired {retired.kid}; regions' setting now:", f"  {_env_line(folder.public_keys())}"],
    )


@keys.command("reseal", cls=Command, epilog="\b\nExamples:\n  tokensync keys reseal --json")
@json_option
@pass_cli
def reseal_command(cli: CliContext, *, as_json: bool) -> None:
    """Publish again, sealed with the active key, every live record of the token topic
    that only an older key or an HMAC vouches for (so the old key can be retired, or a
    topic written in hmac mode bootstraps sealed regions)."""
    from producer.kafka_io import KafkaPublisher, read_log
    from producer.publisher import SealingPublisher
    from producer.reseal import reseal
    from producer.seal_state import hmac_keyring
    from shared.keys import Topics
    from shared.seal_keys import signer_from, verifier_from

    settings = cli.settings
    topic = Topics(settings.topic_prefix).tokens
    signer = signer_from(settings)
    kafka = KafkaPublisher(settings.kafka_bootstrap, topic, client=settings.kafka_client)
    try:
        result = reseal(
            lambda: read_log(settings.kafka_bootstrap, topic, client=settings.kafka_client),
            SealingPublisher(kafka, topic, signer),
            topic,
            verifier_from(settings),
            hmac=hmac_keyring(settings),
            active=signer.kid,
        )
    finally:
        kafka.close()
    emit(
        as_json,
        result,
        f"resealed {result['resealed']} live record(s) under {signer.kid}"
        + (
            f" ({result['republished_newer']} newer one(s) again)"
            if result["republished_newer"]
            else ""
        ),
    )
