"""The local stack gives each region a usage key of its own (issue 20, item 3), so a fresh
`stack up` passes doctor's region-keys check, and keeps the keys it gave on the next up."""

from __future__ import annotations

from pathlib import Path

from shared.settings import Region, Settings
from shared.settings_file import read_settings_file
from stack.stackfile import record_settings


def _record(path: Path, old: Settings, names: tuple[str, ...]) -> Settings:
    regions = [Region(n, f"redis://127.0.0.1:6379/{i}") for i, n in enumerate(names)]
    return record_settings(
        path, {}, old, state_dir=path.parent, kafka_port=9092, regions=regions, api_port=8080
    )


def test_stack_up_gives_every_region_a_key_of_its_own_and_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "tokensync.env"
    first = _record(path, Settings(), ("eu", "us"))
    by_region = {region: kid for region, kid, _ in first.region_keys.items()}
    assert set(by_region) == {"eu", "us"}
    assert len(set(by_region.values())) == 2
    written = Settings.from_env(read_settings_file(path))
    again = _record(path, written, ("eu", "us", "ap"))
    secrets = {(r, k): s for r, k, s in again.region_keys.items()}
    for region, kid, secret in first.region_keys.items():
        assert secrets[(region, kid)] == secret  # an existing key is never replaced
    assert {r for r, _ in secrets} == {"eu", "us", "ap"}
