"""Review: a module an extra installs and a command imports, when missing, gives the
one-line 'install the extra' message, never an 'unexpected failure' with a crash log."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from shared.cli import main


def test_the_api_without_fastapi_offline_names_the_producer_extra_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TOKENSYNC_DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    for name in [m for m in sys.modules if m == "producer.api" or m.startswith("fastapi_off")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi_offline", None)  # not installed
    assert 1 == main(["api", "--port", "1"])
    _, err = capsys.readouterr()
    assert ["tokensync: `tokensync api` needs the [producer] extra"] == [
        line.partition(" (")[0] for line in err.strip().splitlines()
    ], err
    assert not (tmp_path / "cache" / "tokensync" / "cli-errors.log").exists()


@pytest.mark.parametrize("extra", ["producer", "worker", "gate"])
def test_every_distribution_of_an_extra_has_a_module_the_root_probes(extra: str) -> None:
    import re
    import tomllib
    from importlib.metadata import packages_distributions

    from shared.extras import MODULES_OF_EXTRA

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    modules_of: dict[str, set[str]] = {}
    for module, dists in packages_distributions().items():
        for dist in dists:
            modules_of.setdefault(re.sub(r"[-_.]+", "-", dist).lower(), set()).add(module)
    unprobed = []
    for requirement in project["project"]["optional-dependencies"][extra]:
        if "sys_platform" in requirement:
            continue  # optional on some platforms (uvloop)
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=;! ]", requirement)[0]).lower()
        if not modules_of.get(name, set()) & set(MODULES_OF_EXTRA[extra]):
            unprobed.append(name)
    assert [] == unprobed


@pytest.mark.parametrize(
    "argv",
    [["completion"], ["completion", "--json"], ["region", "remove"]],
    ids=["completion-no-shell", "completion-no-shell-json", "missing-argument"],
)
def test_a_usage_error_is_one_line_and_a_non_zero_exit(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert 2 == main(argv)
    out, err = capsys.readouterr()
    text = out if "--json" in argv else err
    assert 1 == len(text.strip().splitlines()), text


def test_a_token_pasted_as_an_extra_argument_is_not_repeated_in_the_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "Q2hpY2tlbnNBbmRXYWZmbGVzQXJlR3JlYXQxMjM0NTY3ODkwab12cd34"
    for argv in (["region", "list", f"7|{secret}"], ["region", "list", secret, "--json"]):
        assert 2 == main(argv)
        out, err = capsys.readouterr()
        assert "unexpected extra argument" in out + err
        assert secret not in out + err


def test_an_unexpected_error_s_line_on_screen_does_not_repeat_a_token_its_message_holds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "7|Q2hpY2tlbnNBbmRXYWZmbGVzQXJlR3JlYXQxMjM0NTY3ODkwab12cd34"

    def explode(_argv: object) -> int:
        raise RuntimeError(f"a driver quoting its input: {secret!r}")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("shared.cli._run", explode)
    assert 1 == main(["validate", "-"])
    _, err = capsys.readouterr()
    assert "failed unexpectedly" in err
    assert secret.split("|")[1] not in err
