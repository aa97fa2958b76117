"""Building tokensync's wheel and installing it into fresh virtual environments.

The wheel is built with pip from a source tree (the project, or the files the Dockerfile
copies into the image) and installed with the extras asked for; the caller caches the
result per test session (the pip cache makes a rebuild take seconds, not minutes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"

# What a validating service must not have to install (issue 14): distribution names.
HEAVY = (
    "faust-streaming",
    "aiokafka",
    "kafka-python",
    "SQLAlchemy",
    "alembic",
    "psycopg",
    "PyMySQL",
    "fastapi",
    "uvicorn",
    "matplotlib",
)


def _run(args: list[str], timeout_s: float = 600) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def build_wheel(source: Path, out: Path) -> Path:
    """The wheel pip builds from ``source`` (a project directory), in ``out``."""
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(out)])
    (wheel,) = out.glob("tokensync-*.whl")
    return wheel


def make_venv(where: Path, wheel: Path, extras: str = "") -> Path:
    """A fresh virtual environment at ``where`` with ``wheel[extras]`` installed; its bin/."""
    _run([sys.executable, "-m", "venv", str(where)])
    requirement = f"{wheel}[{extras}]" if extras else str(wheel)
    _run([str(where / "bin" / "python"), "-m", "pip", "install", "-q", requirement])
    return where / "bin"


def installed(bin_dir: Path) -> set[str]:
    """The normalised names of the distributions installed in a venv."""
    done = subprocess.run(
        [
            str(bin_dir / "python"),
            "-c",
            "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in"
            " m.distributions()))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {normalise(n) for n in done.stdout.split()}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_extras() -> str:
    """The extras the Dockerfile installs (its ``ARG EXTRAS=...`` line)."""
    match = re.search(r"^ARG EXTRAS=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "the Dockerfile names the extras it installs in an ARG EXTRAS=... line"
    return match.group(1)


def image_context(dest: Path) -> Path:
    """The files the Dockerfile's build stage copies, laid out as in the image: building a
    wheel from here fails as ``docker build`` would if a needed file is left out."""
    dest.mkdir(parents=True)
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        *sources, target = words[1:]
        for name in sources:
            source = ROOT / name
            goal = dest / (name if target.endswith("/") or target == "./" else target)
            if source.is_dir():
                shutil.copytree(source, goal, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(source, goal)
    return dest


def project_copy(dest: Path) -> Path:
    """The project's files (tracked, and new ones not ignored) copied to ``dest``: a wheel
    built there holds no stale module from the worktree's ``build/`` directory."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file() and not name.startswith("tests/"):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def clean_env(**extra: str) -> dict[str, str]:
    """An environment without the caller's TOKENSYNC_* settings or virtualenv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENSYNC_", "VIRTUAL_ENV"))}
    env.update(extra)
    return env
