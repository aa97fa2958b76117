"""Review of this round's operator-facing changes: a password an operator puts in a setting
never reaches an error line, a warning, or a world-readable file; a setting in the settings
file is never silently ignored."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from producer.schema import create_engine
from shared.cli import main
from shared.errors import ConfigError
from shared.settings import Settings, write_settings_file
from stack.stackfile import overridden_note

SECRET = "hunter2secret"


@pytest.mark.parametrize(
    ("regions", "says"),
    [
        (f"redis://:{SECRET}@127.0.0.1:6379/0", "redis://***@127.0.0.1"),  # no name
        (f"eu=http://:{SECRET}@127.0.0.1:6379/0", "http://***@127.0.0.1"),  # not redis://
        (f"eu=redis://:{SECRET}@127.0.0.1:6379/0,eu=redis://:{SECRET}@h:1/0", "repeat: eu"),
    ],
    ids=["no-name", "not-redis", "repeated"],
)
def test_a_refused_regions_setting_does_not_show_the_redis_password(
    regions: str, says: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"TOKENSYNC_REGIONS": regions})
    assert SECRET not in str(refused.value)
    assert says in str(refused.value)


def test_the_cli_line_for_a_refused_regions_setting_does_not_show_the_redis_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOKENSYNC_REGIONS", f"redis://:{SECRET}@127.0.0.1:6379/0")
    assert 0 != main(["region", "list"])
    out, err = capsys.readouterr()
    assert "TOKENSYNC_REGIONS" in err or "region" in err
    assert SECRET not in out + err


def test_stack_up_s_warning_about_an_environment_endpoint_does_not_show_its_password() -> None:
    chosen = {"TOKENSYNC_REGIONS": f"eu=redis://:{SECRET}@127.0.0.1:7000/0"}
    runs = Settings().with_overrides(regions=Settings.from_env(chosen).regions[:0])
    note = overridden_note(chosen, runs)
    assert note  # the environment's regions are not the ones the stack runs
    assert SECRET not in note


@pytest.mark.parametrize(
    "url",
    [f"user:{SECRET}@db.example/tokens", f"postgresql://user:{SECRET}@db.example:badport/t"],
    ids=["no-scheme", "bad-port"],
)
def test_a_malformed_database_url_is_a_clear_error_without_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        create_engine(url)
    assert SECRET not in str(refused.value)


def test_an_exported_line_in_the_settings_file_is_honoured_not_silently_ignored(
    tmp_path: Path,
) -> None:
    settings_file = tmp_path / ".tokensync" / "settings.env"
    settings_file.parent.mkdir()
    settings_file.write_text("export TOKENSYNC_TOPIC_PREFIX=prod\n")
    assert "prod" == Settings.load({}, tmp_path).topic_prefix


def test_a_settings_file_line_that_is_no_tokensync_setting_is_refused_with_its_place(
    tmp_path: Path,
) -> None:
    settings_file = tmp_path / ".tokensync" / "settings.env"
    settings_file.parent.mkdir()
    settings_file.write_text("# hand edited\nDATABASE_URL=postgresql://db/tokens\n")
    with pytest.raises(ConfigError) as refused:
        Settings.load({}, tmp_path)
    assert f"{settings_file}:2" in str(refused.value)


def test_an_unknown_setting_left_in_the_settings_file_by_an_older_stack_names_the_file(
    tmp_path: Path,
) -> None:
    settings_file = tmp_path / ".tokensync" / "settings.env"
    settings_file.parent.mkdir()
    settings_file.write_text("TOKENSYNC_RETIRED_KNOB=1\n")
    with pytest.raises(ConfigError) as refused:
        Settings.load({}, tmp_path)
    assert "TOKENSYNC_RETIRED_KNOB" in str(refused.value)
    assert str(settings_file) in str(refused.value)


def test_the_settings_file_is_owner_only_even_over_a_stale_world_readable_temp_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "settings.env"
    stale = path.with_suffix(".tmp")
    stale.write_text("left by an interrupted older stack\n")
    stale.chmod(0o644)
    write_settings_file(path, {"TOKENSYNC_ADMIN_TOKEN": "1|" + SECRET})
    assert 0o600 == stat.S_IMODE(path.stat().st_mode)
    assert not stale.exists()  # what it held (secrets, readable by all) is gone
    assert ["settings.env"] == [p.name for p in tmp_path.iterdir()]


def test_the_crash_log_is_readable_by_its_owner_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".tokensync").mkdir()
    monkeypatch.setattr("shared.cli._run", _explode)
    assert 1 == main(["token", "list"])
    capsys.readouterr()
    log = tmp_path / ".tokensync" / "logs" / "cli-errors.log"
    assert 0o600 == stat.S_IMODE(log.stat().st_mode)


def _explode(_argv: object) -> int:
    raise RuntimeError("a driver's message may carry what the operator typed")


def test_a_store_that_cannot_be_reached_is_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    # a closed local port: the driver's message spans three lines
    monkeypatch.setenv("TOKENSYNC_DATABASE_URL", f"postgresql://u:{SECRET}@127.0.0.1:1/t")
    assert 1 == main(["token", "list", "--type", "App", "--id", "1"])
    out, err = capsys.readouterr()
    assert 1 == len(err.strip().splitlines()), err
    assert SECRET not in out + err


def test_the_variables_compose_yaml_tells_the_operator_to_export_leave_commands_working() -> None:
    import re

    compose = (Path(__file__).parents[2] / "compose.yaml").read_text()
    names = set(re.findall(r"\$\{(TOKENSYNC_[A-Z_]+)", compose))
    names |= set(re.findall(r"export (TOKENSYNC_[A-Z_]+)=", compose))
    # compose's own variables (the Redis password and memory limit) are no TOKENSYNC_* names
    assert "${REDIS_PASSWORD" in compose and "REDIS_PASSWORD" not in {n[10:] for n in names}
    values = {"TOKENSYNC_SIGNING_KEYS": "k1:" + "c" * 44}
    values |= {name: "0123456789abcdef0123" for name in names if name not in values}
    values["TOKENSYNC_GATE_CLIENTS"] = "local:0123456789abcdef0123"
    Settings.from_env(values)


def test_an_empty_environment_variable_does_not_blank_the_settings_file_s_value(
    tmp_path: Path,
) -> None:
    settings_file = tmp_path / ".tokensync" / "settings.env"
    settings_file.parent.mkdir()
    settings_file.write_text("TOKENSYNC_TOPIC_PREFIX=prod\nTOKENSYNC_REDIS_NAMESPACE=prodns\n")
    # `export TOKENSYNC_TOPIC_PREFIX=` (or compose's ${VAR:-}) means "not set"
    settings = Settings.load(
        {"TOKENSYNC_TOPIC_PREFIX": "", "TOKENSYNC_REDIS_NAMESPACE": ""}, tmp_path
    )
    assert ("prod", "prodns") == (settings.topic_prefix, settings.redis_namespace)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://app@db.example/tokens?password={SECRET}",
        f"postgresql+psycopg://app@db.example/tokens?sslmode=require&PASSWORD={SECRET}&x=1",
        f"redis://127.0.0.1:6379/0?password={SECRET}",
    ],
)
def test_a_password_in_a_url_s_query_is_redacted_too(url: str) -> None:
    from shared.settings import redact_url

    shown = redact_url(url)
    assert SECRET not in shown
    assert "***" in shown
