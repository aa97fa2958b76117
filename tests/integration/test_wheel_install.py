"""The wheel as a service installs it: the base install validates against a real Redis and
pulls none of the heavy packages; the image's extras resolve every command compose runs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from shared.tokenformat import checksum
from tests.region_helpers import RegionFixture
from tests.wheel_helpers import (
    HEAVY,
    ROOT,
    build_wheel,
    clean_env,
    image_context,
    image_extras,
    installed,
    make_venv,
    normalise,
    project_copy,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TOKEN = f"{'w' * 40}{checksum('w' * 40)}"


@pytest.fixture(scope="session")
def base_bin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the project's wheel and no extras (built once per session)."""
    where = tmp_path_factory.mktemp("base-install")
    yield make_venv(where / "venv", build_wheel(project_copy(where / "src"), where / "dist"))


@pytest.fixture(scope="session")
def image_bin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv holding what the Dockerfile installs: the wheel built from the files the
    image copies, with the image's extras (built once per session)."""
    where = tmp_path_factory.mktemp("image-install")
    wheel = build_wheel(image_context(where / "src"), where / "dist")
    yield make_venv(where / "venv", wheel, image_extras())


def _tokensync(
    bin_dir: Path, cwd: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "tokensync"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=clean_env(**env),
        check=False,
    )


def test_the_base_install_pulls_none_of_the_heavy_packages(base_bin: Path) -> None:
    present = installed(base_bin)
    assert "tokensync" in present
    assert set() == {normalise(n) for n in HEAVY} & present


def test_the_base_install_imports_what_a_validating_service_uses_and_nothing_heavy(
    base_bin: Path,
) -> None:
    modules = (
        "shared",
        "shared.validator",
        "shared.asgi",
        "shared.nearcache",
        "shared.usage",
        "shared.events",
        "shared.keys",
        "shared.settings",
        "shared.commands",
    )
    heavy = (
        "faust",
        "aiokafka",
        "kafka",
        "sqlalchemy",
        "alembic",
        "psycopg",
        "pymysql",
        "fastapi",
        "uvicorn",
        "matplotlib",
        "producer",
        "workers",
    )
    script = (
        f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))"
    )
    done = subprocess.run(
        [str(base_bin / "python"), "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        check=False,
    )
    assert (0, "[]") == (done.returncode, done.stdout.strip()), done.stderr


def test_the_base_install_validates_a_token_against_a_real_redis(
    base_bin: Path, redis_url: str, tmp_path: Path
) -> None:
    region = RegionFixture(redis_url)
    region.beat()
    region.token(TOKEN, token_id=7, owner="42", abilities=("orders:read",))
    regions = f"eu={redis_url}"

    valid = _tokensync(
        base_bin, tmp_path, "validate", TOKEN, "--region", "eu", TOKENSYNC_REGIONS=regions
    )
    assert (0, "") == (valid.returncode, valid.stderr)
    assert valid.stdout.startswith("valid: App\\Models\\User:42 token 7")

    forbidden = _tokensync(
        base_bin,
        tmp_path,
        "validate",
        TOKEN,
        "--region",
        "eu",
        "--ability",
        "orders:write",
        TOKENSYNC_REGIONS=regions,
    )
    assert 2 == forbidden.returncode
    assert forbidden.stdout.startswith("forbidden: lacks orders:write")

    unknown = f"{'x' * 40}{checksum('x' * 40)}"
    invalid = _tokensync(
        base_bin, tmp_path, "validate", unknown, "--region", "eu", TOKENSYNC_REGIONS=regions
    )
    assert 1 == invalid.returncode


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["token", "list"], "producer"),
        (["relay", "--help"], "producer"),
        (["worker", "--region", "eu"], "worker"),
        (["gate", "--help"], "gate"),
        (["stack", "up"], "stack"),
        (["demo"], "stack"),
        (["bench", "all"], "bench"),
    ],
)
def test_a_command_whose_extra_is_missing_names_the_extra_in_one_line(
    base_bin: Path, tmp_path: Path, args: list[str], extra: str
) -> None:
    done = _tokensync(base_bin, tmp_path, *args)
    assert 1 == done.returncode
    assert "" == done.stdout
    lines = done.stderr.splitlines()
    assert 1 == len(lines), done.stderr
    assert f"needs the [{extra}] extra" in lines[0]
    assert lines[0].endswith(f"pip install 'tokensync[{extra}]'")
    assert "Traceback" not in done.stderr


def test_the_base_install_lists_every_command_in_its_help(base_bin: Path, tmp_path: Path) -> None:
    done = _tokensync(base_bin, tmp_path, "--help")
    assert (0, "") == (done.returncode, done.stderr)
    for name in ("validate", "token", "relay", "worker", "gate", "stack", "completion"):
        assert f"\n  {name} " in done.stdout


def test_every_command_compose_runs_resolves_in_the_image_install(
    image_bin: Path, tmp_path: Path
) -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    commands = {
        tuple(s["command"][:2])
        for s in services.values()
        if s.get("command", [""])[0] == "tokensync"
    }
    assert {("tokensync", n) for n in ("relay", "worker", "api", "gate")} <= commands
    for _, name in sorted(commands):
        done = _tokensync(image_bin, tmp_path, name, "--help")
        assert (0, "") == (done.returncode, done.stderr), name
        assert done.stdout.startswith(f"Usage: tokensync {name} ")


def test_the_image_install_leaves_the_benchmarks_out(image_bin: Path) -> None:
    present = installed(image_bin)
    assert "matplotlib" not in present
    done = subprocess.run(
        [
            str(image_bin / "python"),
            "-c",
            "import importlib.util as u; print(u.find_spec('bench'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd="/",
    )
    assert "None" == done.stdout.strip()
