"""The ``fallback`` policy for the gate: the token store's answer, found by entry point.

The gate imports ``shared`` only; an installed authority package contributes a factory
under the ``tokensync.fallbacks`` entry-point group (``producer`` registers ``store``).
"""

from __future__ import annotations

from importlib.metadata import entry_points

from shared.errors import ConfigError
from shared.settings import Settings
from shared.validator import Fallback

__all__ = ["load_fallback"]


def load_fallback(settings: Settings, name: str = "store") -> Fallback:
    """The fallback called ``name`` built from the settings, or a ConfigError."""
    for ep in entry_points(group="tokensync.fallbacks"):
        if ep.name == name:
            factory = ep.load()
            fallback: Fallback = factory(settings)
            return fallback
    raise ConfigError(
        "the fallback policy needs the token store's package (tokensync's producer) installed"
    )
