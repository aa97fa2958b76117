"""The seal keys as the topic sees them: ``doctor``'s seal check and ``keys`` reports.

Reads the whole token topic (a region's bootstrap reads no less), so it is for operators'
commands, not for a hot path.
"""

from __future__ import annotations

from producer.doctor_report import Check, Outcome
from producer.reseal import Scan, scan
from shared.events import Keyring
from shared.keys import Topics
from shared.seal_keys import KeyStatus, SealKeyDir, verifier_from
from shared.settings import Settings

__all__ = ["hmac_keyring", "scan_topic", "seal_checks"]


def hmac_keyring(settings: Settings) -> Keyring | None:
    """The HMAC keyring that still vouches for records (None once the mode is sealed)."""
    if settings.signing_mode == "sealed" or not settings.signing_keys:
        return None
    return Keyring(settings.signing_keys, settings.signing_key_id)


def scan_topic(settings: Settings) -> Scan:
    """Who vouches for each live record of the token topic."""
    from producer.kafka_io import read_log

    topic = Topics(settings.topic_prefix).tokens
    records, _ = read_log(settings.kafka_bootstrap, topic, client=settings.kafka_client)
    return scan(records, topic, verifier_from(settings), hmac_keyring(settings))


def seal_checks(settings: Settings) -> list[Check]:
    """``doctor``: the active seal key, and live records only an old key vouches for."""
    if settings.signing_mode == "hmac":
        return []
    keys = SealKeyDir(settings.seal_dir).entries()
    active = next((k for k in keys if k.status is KeyStatus.ACTIVE), None)
    if active is None:
        return [
            Check(
                "seal keys",
                Outcome.FAIL,
                f"signing mode {settings.signing_mode} but no active seal key in "
                f"{settings.seal_dir}",
                "tokensync keys generate (on the relay's host)",
            )
        ]
    found = scan_topic(settings)
    old = found.needing(active.kid)
    checks = [
        Check(
            "seal keys",
            Outcome.PASS,
            f"sealing with {active.kid}; {len(found.newest)} live record(s), "
            f"{found.seals} valid seal(s)",
        )
    ]
    if old:
        by = found.by_voucher()
        others = ", ".join(f"{kid}: {n}" for kid, n in sorted(by.items()) if kid != active.kid)
        checks.append(
            Check(
                "sealed records",
                Outcome.WARN,
                f"{len(old)} live record(s) only an old key vouches for ({others}): a "
                "region bootstrapping after that key is retired would dead-letter them",
                "tokensync keys reseal",
            )
        )
    if found.unvouched:
        checks.append(
            Check(
                "sealed records",
                Outcome.WARN,
                f"{found.unvouched} live record(s) no accepted seal vouches for (forged, "
                "or a batch whose seal never landed): regions dead-letter them",
                "check who writes to the token topic (Kafka ACLs: the relay alone)",
            )
        )
    return checks
