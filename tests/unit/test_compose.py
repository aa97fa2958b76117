"""compose.yaml only names tokensync commands and settings that exist, its Redis requires a
password and never evicts, and the image it builds leaves the benchmarks out."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import yaml

from shared.cli import root
from shared.settings import PREFIX, Settings

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"
DOCKERFILE = COMPOSE.parent / "Dockerfile"
PASSWORD = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


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


def _interpolate(value: str, env: dict[str, str]) -> str:
    """compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}``, as compose would."""

    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        assert op != ":?", f"compose refuses to start without {name}: {rest}"
        return rest if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def _redis_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in _services().items() if s.get("image", "").startswith("redis:")}


def test_every_region_redis_requires_a_password_and_never_evicts() -> None:
    redis_services = _redis_services()
    assert {"redis-eu", "redis-us", "redis-ap"} == set(redis_services)
    for name, service in redis_services.items():
        args = [_interpolate(a, {"REDIS_PASSWORD": PASSWORD}) for a in service["command"]]
        options = dict(zip(args[1::2], args[2::2], strict=False))
        assert PASSWORD == options.get("--requirepass"), name
        assert "noeviction" == options.get("--maxmemory-policy"), name
        assert options.get("--maxmemory"), f"{name}: noeviction needs a memory limit to act on"


def test_compose_refuses_to_start_redis_without_a_password() -> None:
    for service in _redis_services().values():
        password = service["command"][service["command"].index("--requirepass") + 1]
        try:
            _interpolate(password, {})
        except AssertionError:
            continue
        raise AssertionError("an empty REDIS_PASSWORD would start Redis unprotected")


def test_the_tokensync_services_reach_each_region_with_the_redis_password() -> None:
    for name, service in _services().items():
        environment = service.get("environment") or {}
        if "TOKENSYNC_REGIONS" not in environment:
            continue
        env = {
            k: _interpolate(
                str(v),
                {"REDIS_PASSWORD": PASSWORD, "TOKENSYNC_SIGNING_KEYS": "k1:" + "A" * 44},
            )
            for k, v in environment.items()
        }
        regions = Settings.from_env(env).regions
        assert ["eu", "us", "ap"] == [r.name for r in regions], name
        for region in regions:
            assert region.redis_url == f"redis://:{PASSWORD}@redis-{region.name}:6379/0", name


def test_the_image_installs_the_services_extras_and_leaves_the_benchmarks_out() -> None:
    text = DOCKERFILE.read_text()
    match = re.search(r"^ARG EXTRAS=(\S+)$", text, re.MULTILINE)
    assert match, "the Dockerfile names its extras in an ARG EXTRAS=... line"
    assert {"producer", "worker", "gate"} == set(match.group(1).split(","))
    copied = {
        w for line in text.splitlines() if line.startswith("COPY ") for w in line.split()[1:-1]
    }
    assert {
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "shared",
        "producer",
        "workers",
        "gate",
    } <= copied
    assert "bench" not in copied
