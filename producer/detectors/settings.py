"""The watch's settings, re-exported: they are parsed once into ``Settings.watch`` by
``shared.watch_settings`` (so the settings file holds them like every other setting)."""

from shared.watch_settings import Detector, DetectorSettings, Reaction, WatchSettings

__all__ = ["Detector", "DetectorSettings", "Reaction", "WatchSettings"]
