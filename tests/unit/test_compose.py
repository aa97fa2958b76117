"""compose.yaml only names tokensync commands and settings that exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from shared.cli import root
from shared.settings import PREFIX, Settings

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"


def _services() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(COMPOSE.read_text())
    services: dict[str, dict[str, Any]] = data["services"]
    return services


def _parse(argv: list[str]) -> click.Command:
    """Resolve ``tokensync ...`` to its command and parse its options, as the CLI would."""
    command: click.Command = root
    args = argv[1:]
    ctx = click.Context(root, info_name="tokensync")
    while isinstance(command, click.Group):
        name, args = args[0], args[1:]
        sub = command.get_command(ctx, name)
        assert sub is not None, f"tokensync has no command {name!r} ({' '.join(argv)})"
        command = sub
    command.make_context(command.name, list(args))
    return command


def test_every_tokensync_command_in_compose_exists_and_parses() -> None:
    commands = [
        s["command"] for s in _services().values() if s.get("command", [""])[0] == "tokensync"
    ]
    assert {"api", "relay", "worker"} <= {c[1] for c in commands}
    for argv in commands:
        _parse(argv)


def test_every_tokensync_setting_in_compose_is_a_known_setting() -> None:
    names = {
        key
        for service in _services().values()
        for key in (service.get("environment") or {})
        if key.startswith(PREFIX)
    }
    assert names, "compose passes settings to the tokensync services"
    assert set() == {n for n in names if n[len(PREFIX) :] not in Settings.KNOWN}


def test_compose_runs_one_worker_per_region_it_configures() -> None:
    services = _services()
    regions = services["relay"]["environment"]["TOKENSYNC_REGIONS"]
    names = {item.split("=")[0] for item in regions.split(",")}
    workers = {
        s["command"][3]
        for s in services.values()
        if s.get("command", [""])[:2] == ["tokensync", "worker"]
    }
    assert names == workers
