"""scripts/prerequisites.sh, the one install check of ``make demo``, ``make test`` and
.ci/run: run with a PATH that holds only the tools a test lets it see."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "prerequisites.sh"

#: What the script itself runs.
PLUMBING = ("bash", "id", "uname", "sed")
#: Every program the test profile looks for.
TOOLS = (
    "java",
    "mvn",
    "redis-server",
    "make",
    "initdb",
    "mariadbd",
    "mariadb-install-db",
    "nginx",
    "chromium",
    "runuser",
)


def _bin(tmp_path: Path, *, hide: tuple[str, ...] = (), python: bool = True) -> Path:
    """A folder of the script's plumbing and a stand-in for each tool but ``hide``; this
    Python (with its venv module) as ``python3``, or a stand-in answering yes."""
    folder = tmp_path / "bin"
    folder.mkdir(parents=True)
    for name in PLUMBING:
        real = shutil.which(name)
        assert real is not None, name
        (folder / name).symlink_to(real)
    if python:
        (folder / "python3").symlink_to(sys.executable)
    for name in (*TOOLS, *(() if python else ("python3",))):
        if name not in hide:
            (folder / name).write_text("#!/bin/sh\nexit 0\n")
            (folder / name).chmod(0o755)
    return folder


def _run(
    folder: Path, profile: str, *, euid: int, os_name: str = "debian"
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": str(folder),
        "TOKENSYNC_PREREQ_EUID": str(euid),
        "TOKENSYNC_PREREQ_OS": os_name,
        "TOKENSYNC_PREREQ_DIRS": "",
        "PYTHON": "python3",
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    return subprocess.run(
        ["bash", str(SCRIPT), profile],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_with_everything_present_it_does_nothing_and_says_nothing(tmp_path: Path) -> None:
    result = _run(_bin(tmp_path), "test", euid=0)
    assert (0, "", "") == (result.returncode, result.stdout, result.stderr)


def test_a_user_missing_tools_gets_the_one_sudo_apt_command_and_exit_1(tmp_path: Path) -> None:
    result = _run(_bin(tmp_path, hide=("redis-server", "chromium")), "test", euid=1000)
    expected = (
        "tokensync (test) needs redis-server, Chromium; "
        "run: sudo apt-get install -y redis-server chromium\n"
    )
    assert (1, "", expected) == (result.returncode, result.stdout, result.stderr)


def test_the_demo_profile_does_not_ask_for_the_test_only_tools(tmp_path: Path) -> None:
    hidden = ("initdb", "mariadbd", "mariadb-install-db", "nginx", "chromium", "make")
    result = _run(_bin(tmp_path, hide=hidden), "demo", euid=1000)
    assert (0, "", "") == (result.returncode, result.stdout, result.stderr)
    result = _run(_bin(tmp_path / "2", hide=("java", *hidden)), "demo", euid=1000)
    expected = (
        "tokensync (demo) needs a JDK 17+; run: sudo apt-get install -y openjdk-17-jdk-headless\n"
    )
    assert (1, expected) == (result.returncode, result.stderr)


def test_on_macos_the_one_line_is_a_brew_install(tmp_path: Path) -> None:
    result = _run(_bin(tmp_path, hide=("java", "mvn", "nginx")), "test", euid=501, os_name="macos")
    expected = (
        "tokensync (test) needs a JDK 17+, Maven, nginx; run: brew install openjdk maven nginx\n"
    )
    assert (1, expected) == (result.returncode, result.stderr)


def test_root_installs_the_missing_packages_with_apt_and_says_so(tmp_path: Path) -> None:
    folder = _bin(tmp_path, hide=("mvn", "nginx"))
    calls = tmp_path / "apt-calls"
    (folder / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (folder / "apt-get").chmod(0o755)
    result = _run(folder, "test", euid=0)
    assert 0 == result.returncode, result.stderr
    expected_out = "tokensync (test) installs with apt-get: maven nginx (missing: Maven, nginx)\n"
    assert expected_out == result.stdout
    assert ["update -qq", "install -y -qq maven nginx"] == calls.read_text().splitlines()


def test_an_unknown_profile_is_a_usage_error(tmp_path: Path) -> None:
    result = _run(_bin(tmp_path), "everything", euid=0)
    assert 2 == result.returncode
    assert "usage:" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to nobody")
def test_as_the_real_nobody_user_a_missing_tool_stops_with_the_command() -> None:
    # pytest's tmp_path lies under a folder only root may enter
    with tempfile.TemporaryDirectory() as name:
        root = Path(name)
        root.chmod(0o755)
        # the checkout may lie under a folder only root may enter (a mktemp -d clone, as CI
        # makes): nobody runs a copy of the script
        script = root / "prerequisites.sh"
        shutil.copyfile(SCRIPT, script)
        script.chmod(0o644)
        # this Python may live under /root: a stand-in answers for it
        result = _as_nobody(_bin(root, hide=("nginx",), python=False), script)
    expected = "tokensync (test) needs nginx; run: sudo apt-get install -y nginx\n"
    assert (1, expected) == (result.returncode, result.stderr)


def _as_nobody(folder: Path, script: Path) -> subprocess.CompletedProcess[str]:
    env = f"PATH={folder} TOKENSYNC_PREREQ_OS=debian TOKENSYNC_PREREQ_DIRS= PYTHON=python3"
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", "sh", "-c", f"env -i {env} bash {script} test"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_on_ubuntu_chromium_is_the_chromium_browser_package(tmp_path: Path) -> None:
    result = _run(_bin(tmp_path, hide=("chromium",)), "test", euid=1000, os_name="ubuntu")
    expected = "tokensync (test) needs Chromium; run: sudo apt-get install -y chromium-browser\n"
    assert (1, expected) == (result.returncode, result.stderr)


def test_a_java_older_than_17_counts_as_missing_and_the_message_says_which_was_found(
    tmp_path: Path,
) -> None:
    """Kafka 4 brokers need Java 17: an older JDK on PATH is not the JDK 17+ asked for."""
    folder = _bin(tmp_path)
    (folder / "java").write_text(
        "#!/bin/sh\necho 'openjdk version \"11.0.22\" 2024-01-16' >&2\n"
        "echo 'OpenJDK Runtime Environment (build 11.0.22+7-post-Debian-1deb11u1)' >&2\n"
    )
    result = _run(folder, "demo", euid=1000)
    expected = (
        "tokensync (demo) needs a JDK 17+ (found Java 11); "
        "run: sudo apt-get install -y openjdk-17-jdk-headless\n"
    )
    assert (1, expected) == (result.returncode, result.stderr)
    # Java 17 and later, in either spelling of the version, is enough
    for version in ('openjdk version "17.0.15" 2025-04-15', 'java version "21" 2023-09-19'):
        (folder / "java").write_text(f"#!/bin/sh\necho '{version}' >&2\n")
        done = _run(folder, "demo", euid=1000)
        assert (0, "") == (done.returncode, done.stderr), version
