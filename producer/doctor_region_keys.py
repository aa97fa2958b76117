"""``tokensync doctor``'s region key check: does every region sign its usage reports with
a key of its own (``shared.region_keys``), so that none can speak for another?"""

from __future__ import annotations

from collections.abc import Sequence

from producer.doctor_report import Check, Outcome
from shared.settings import Region, Settings

__all__ = ["region_key_checks"]

_NAME = "region keys"


def region_key_checks(settings: Settings, regions: Sequence[Region]) -> list[Check]:
    """Warn while usage reports of some region are accepted under the shared keyring
    (the migration state: any region can then claim usage as that one); key ids only."""
    keys = settings.region_keys
    names = sorted(r.name for r in regions)
    if not keys:
        return [
            Check(
                _NAME,
                Outcome.WARN,
                "no region keys: usage reports are accepted under the shared keyring, so "
                "any region can claim usage (and trigger the watch's reactions) as any other",
                "give each region's workers TOKENSYNC_REGION_KEY=KEY_ID:BASE64_SECRET and the "
                "relay TOKENSYNC_REGION_KEYS=REGION=KEY_ID:BASE64_SECRET,...",
            )
        ]
    keyed = keys.regions
    shown = ", ".join(f"{r}: {'/'.join(keys.kids(r))}" for r in sorted(keyed))
    missing = [n for n in names if n not in keyed]
    if missing:
        return [
            Check(
                _NAME,
                Outcome.WARN,
                f"regions without a key of their own: {', '.join(missing)} (their usage "
                f"reports are accepted under the shared keyring); keyed: {shown}",
                "add REGION=KEY_ID:BASE64_SECRET for each to TOKENSYNC_REGION_KEYS and give "
                "that region's workers TOKENSYNC_REGION_KEY",
            )
        ]
    unknown = sorted(keyed - set(names))
    extra = f" (keys for regions not known here: {', '.join(unknown)})" if unknown else ""
    return [Check(_NAME, Outcome.PASS, f"each region signs its usage reports: {shown}{extra}")]
