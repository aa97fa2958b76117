"""``tokensync keys`` without servers: generate, list, rotate, retire, and what the relay
and the regions load from them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from shared.cli import main
from shared.errors import ConfigError
from shared.seal_keys import KeyStatus, SealKeyDir, signer_from, verifier_from
from shared.settings import Settings


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TOKENSYNC_SEAL_KEYS_DIR", str(tmp_path / "keys"))
    return tmp_path / "keys"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_writes_an_owner_only_private_key_and_prints_the_regions_setting(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "keys", "generate", "--json")
    assert code == 0
    body = json.loads(out)
    assert body["status"] == "active"
    private = Path(body["private_key_file"])
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes()
    assert "PRIVATE" not in (env / "keyring.json").read_text()
    line = body["regions_env"]
    name, _, value = line.partition("=")
    regions = Settings.from_env({name: value})
    assert list(regions.seal_public_keys) == [body["key_id"]]


def test_rotation_keeps_both_public_keys_until_the_old_one_is_retired(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "keys", "generate")
    old = SealKeyDir(env).entries()[0].kid
    code, out, _ = run(capsys, "keys", "generate", "--json")
    new = json.loads(out)["key_id"]
    assert code == 0 and json.loads(out)["status"] == "verifying"
    settings = Settings.from_env({"TOKENSYNC_SEAL_KEYS_DIR": str(env)})
    assert signer_from(settings).kid == old  # generating does not change what signs
    code, out, _ = run(capsys, "keys", "rotate", "--json")
    assert json.loads(out) == {"active": new, "previous": old}
    assert signer_from(settings).kid == new
    assert verifier_from(settings).ids == sorted([old, new])  # both verify
    code, _, err = run(capsys, "keys", "retire", new, "--force")
    assert code != 0 and "is the active seal key" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run(capsys, "keys", "retire", old, "--force", "--json")
    assert code == 0 and json.loads(out)["retired"] == old
    assert verifier_from(settings).ids == [new]
    assert not SealKeyDir(env).private_path(old).exists()
    code, out, _ = run(capsys, "keys", "list", "--json")
    assert {r["key_id"]: r["status"] for r in json.loads(out)} == {
        old: KeyStatus.RETIRED,
        new: KeyStatus.ACTIVE,
    }


def test_the_relay_refuses_a_private_key_others_can_read(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "keys", "generate")
    folder = SealKeyDir(env)
    folder.private_path(folder.entries()[0].kid).chmod(0o644)
    settings = Settings.from_env({"TOKENSYNC_SEAL_KEYS_DIR": str(env)})
    with pytest.raises(ConfigError, match="readable by others: chmod 600"):
        signer_from(settings)


def test_sealed_regions_without_public_keys_are_a_clear_error(env: Path) -> None:
    settings = Settings.from_env(
        {"TOKENSYNC_SIGNING_MODE": "sealed", "TOKENSYNC_SEAL_KEYS_DIR": str(env)}
    )
    with pytest.raises(ConfigError, match="needs seal public keys"):
        verifier_from(settings)


def test_a_malformed_public_key_setting_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="SEAL_PUBLIC_KEYS must be KEY_ID:BASE64"):
        Settings.from_env({"TOKENSYNC_SEAL_PUBLIC_KEYS": "k1:not-base64"})
