"""What the watch looks for and how it reacts: one ``DetectorSettings`` per detector, the
usage window and the webhook, parsed once with every other setting into ``Settings.watch``
(``WatchSettings.from_env``, called by ``Settings.from_env``: the settings file holds them too).

Per detector NAME (``MULTI_REGION``, ``DORMANT``, ``AFTER_ROTATION``, ``INVALID_BURST``,
``PRINCIPAL_JUMP``): ``TOKENSYNC_DETECT_<NAME>`` = on|off, ``..._REACTION`` =
alert|revoke-token|revoke-principal, ``..._WINDOW`` (a duration) and ``..._THRESHOLD``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.errors import ConfigError, UsageError
from shared.timeparse import parse_duration
from shared.watch_names import DETECTORS

__all__ = ["Detector", "DetectorSettings", "Reaction", "WatchSettings"]


class Detector(enum.StrEnum):
    """The detectors: what each finding is about."""

    MULTI_REGION = "multi_region"  # one token in >= THRESHOLD regions within WINDOW
    DORMANT = "dormant"  # unused for >= WINDOW, then >= THRESHOLD requests
    AFTER_ROTATION = "after_rotation"  # >= THRESHOLD uses after the grace of a rotation
    # made within WINDOW
    INVALID_BURST = "invalid_burst"  # >= THRESHOLD invalid from one client within WINDOW
    PRINCIPAL_JUMP = "principal_jump"  # >= THRESHOLD tokens issued to one owner in WINDOW


class Reaction(enum.StrEnum):
    """What a finding does beyond the alert."""

    ALERT = "alert"
    REVOKE_TOKEN = "revoke-token"  # noqa: S105 - a policy name, not a secret
    REVOKE_PRINCIPAL = "revoke-principal"


assert tuple(d.name for d in Detector) == DETECTORS  # shared.watch_names lists the same names

# What each detector's finding can revoke: an invalid burst names no token nor owner.
_ALLOWED: dict[Detector, tuple[Reaction, ...]] = {
    Detector.MULTI_REGION: tuple(Reaction),
    Detector.DORMANT: tuple(Reaction),
    Detector.AFTER_ROTATION: tuple(Reaction),
    Detector.INVALID_BURST: (Reaction.ALERT,),
    Detector.PRINCIPAL_JUMP: (Reaction.ALERT, Reaction.REVOKE_PRINCIPAL),
}


@dataclass(frozen=True)
class DetectorSettings:
    """One detector: on or off, its window (seconds), threshold and reaction."""

    enabled: bool
    window_s: float
    threshold: int
    reaction: Reaction = Reaction.ALERT
    region_threshold: int = 0  # INVALID_BURST: invalid presentations in one region

    @property
    def cooldown_ms(self) -> int:
        """No second finding for the same subject this soon: the window, kept between
        10 minutes and an hour."""
        return int(min(max(self.window_s, 600.0), 3600.0) * 1000)


_DEFAULTS: dict[Detector, DetectorSettings] = {
    Detector.MULTI_REGION: DetectorSettings(True, 300.0, 2),
    Detector.DORMANT: DetectorSettings(True, 30 * 86400.0, 1),
    Detector.AFTER_ROTATION: DetectorSettings(True, 30 * 86400.0, 1),
    Detector.INVALID_BURST: DetectorSettings(True, 60.0, 100, region_threshold=1000),
    Detector.PRINCIPAL_JUMP: DetectorSettings(True, 3600.0, 20),
}

_ON = {"1", "true", "yes", "on"}
_OFF = {"0", "false", "no", "off"}


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(f"TOKENSYNC_{name}")
    return None if value is None or not value.strip() else value.strip()


def _duration(environ: Mapping[str, str], name: str, default: float) -> float:
    text = _env(environ, name)
    if text is None:
        return default
    try:
        seconds = parse_duration(text)
    except UsageError as e:
        raise ConfigError(f"TOKENSYNC_{name}: {e}") from e
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"TOKENSYNC_{name} must be a positive duration")
    return seconds


def _count(environ: Mapping[str, str], name: str, default: int) -> int:
    text = _env(environ, name)
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= 10**9:
        raise ConfigError(f"TOKENSYNC_{name} must be a whole number from 1 to 10^9")
    return int(text)


def _detector(environ: Mapping[str, str], detector: Detector) -> DetectorSettings:
    base = _DEFAULTS[detector]
    name = f"DETECT_{detector.name}"
    switch = _env(environ, name)
    if switch is not None and switch.lower() not in _ON | _OFF:
        raise ConfigError(f"TOKENSYNC_{name} must be on or off")
    text = _env(environ, f"{name}_REACTION") or base.reaction.value
    try:
        reaction = Reaction(text.lower())
    except ValueError:
        choices = ", ".join(r.value for r in Reaction)
        raise ConfigError(f"TOKENSYNC_{name}_REACTION must be one of {choices}") from None
    if reaction not in _ALLOWED[detector]:
        allowed = ", ".join(r.value for r in _ALLOWED[detector])
        raise ConfigError(f"TOKENSYNC_{name}_REACTION for {detector.value} may be {allowed}")
    return DetectorSettings(
        enabled=base.enabled if switch is None else switch.lower() in _ON,
        window_s=_duration(environ, f"{name}_WINDOW", base.window_s),
        threshold=_count(environ, f"{name}_THRESHOLD", base.threshold),
        reaction=reaction,
        region_threshold=_count(environ, f"{name}_REGION_THRESHOLD", base.region_threshold)
        if base.region_threshold
        else 0,
    )


@dataclass(frozen=True)
class WatchSettings:
    """The watch's settings: the usage window, the detectors, the webhook."""

    window_s: float = 7 * 86400.0
    detectors: Mapping[Detector, DetectorSettings] = field(default_factory=lambda: dict(_DEFAULTS))
    webhook_url: str | None = field(default=None, repr=False)  # a Slack-style URL is a secret
    webhook_secret: bytes | None = field(default=None, repr=False)
    webhook_attempts: int = 6
    receipt_timeout_s: float = 30.0

    def __getitem__(self, detector: Detector) -> DetectorSettings:
        return self.detectors[detector]

    def with_detector(self, detector: Detector, **changes: object) -> WatchSettings:
        """A copy with one detector's settings changed (tests, dry runs)."""
        from dataclasses import replace

        current = self.detectors[detector]
        updated = replace(current, **changes)  # type: ignore[arg-type]
        return replace(self, detectors={**self.detectors, detector: updated})

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WatchSettings:
        """Parse ``TOKENSYNC_USAGE_WINDOW``, ``TOKENSYNC_DETECT_*`` and
        ``TOKENSYNC_WEBHOOK_{URL,SECRET,ATTEMPTS}``; ConfigError names what is wrong."""
        url = _env(environ, "WEBHOOK_URL")
        secret = _env(environ, "WEBHOOK_SECRET")
        if url is not None:
            if not url.startswith(("http://", "https://")):
                raise ConfigError("TOKENSYNC_WEBHOOK_URL must be an http:// or https:// URL")
            if secret is None or len(secret) < 16:
                raise ConfigError(
                    "TOKENSYNC_WEBHOOK_SECRET (16 characters or more) is required with"
                    " TOKENSYNC_WEBHOOK_URL: receivers verify each delivery's signature"
                )
        window = _duration(environ, "USAGE_WINDOW", cls.window_s)
        return cls(
            window_s=window,
            detectors={d: _detector(environ, d) for d in Detector},
            webhook_url=url,
            webhook_secret=secret.encode() if secret else None,
            webhook_attempts=_count(environ, "WEBHOOK_ATTEMPTS", cls.webhook_attempts),
        )

    def to_env(self) -> dict[str, str]:
        """The ``TOKENSYNC_*`` variables that reproduce these settings (those that differ
        from the defaults; the webhook secret included)."""
        env: dict[str, str] = {}
        if self.window_s != WatchSettings.window_s:
            env["USAGE_WINDOW"] = _seconds(self.window_s)
        if self.webhook_url is not None:
            env["WEBHOOK_URL"] = self.webhook_url
        if self.webhook_secret is not None:
            env["WEBHOOK_SECRET"] = self.webhook_secret.decode()
        if self.webhook_attempts != WatchSettings.webhook_attempts:
            env["WEBHOOK_ATTEMPTS"] = str(self.webhook_attempts)
        for detector, current in self.detectors.items():
            base, name = _DEFAULTS[detector], f"DETECT_{detector.name}"
            if current.enabled != base.enabled:
                env[name] = "on" if current.enabled else "off"
            if current.reaction != base.reaction:
                env[f"{name}_REACTION"] = current.reaction.value
            if current.window_s != base.window_s:
                env[f"{name}_WINDOW"] = _seconds(current.window_s)
            if current.threshold != base.threshold:
                env[f"{name}_THRESHOLD"] = str(current.threshold)
            if base.region_threshold and current.region_threshold != base.region_threshold:
                env[f"{name}_REGION_THRESHOLD"] = str(current.region_threshold)
        return {f"TOKENSYNC_{k}": v for k, v in env.items()}


def _seconds(value: float) -> str:
    """A duration as ``parse_duration`` reads it back (seconds, no exponent)."""
    text = repr(value)
    return text if "e" not in text else f"{value:.9f}"
