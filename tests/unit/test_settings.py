"""Settings are parsed once, strictly, with one clear error per mistake."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.settings import (
    Settings,
    local_stack_difference,
    read_settings_file,
    redact_url,
    settings_file_path,
    write_settings_file,
)

KEY = base64.b64encode(b"s" * 32).decode()


def test_environment_values_become_typed_settings() -> None:
    settings = Settings.from_env(
        {
            "TOKENSYNC_REGIONS": "eu=redis://h:1/0, us=redis://h:2/3",
            "TOKENSYNC_SIGNING_KEYS": f"old:{KEY},new:{KEY}",
            "TOKENSYNC_SIGNING_KEY_ID": "new",
            "TOKENSYNC_STALENESS_BUDGET": "2.5",
            "TOKENSYNC_TOKEN_EXPIRATION": "60",
        }
    )
    assert ["eu", "us"] == [r.name for r in settings.regions]
    assert ("new", {"old", "new"}) == (settings.signing_key_id, set(settings.signing_keys))
    assert (2.5, 60) == (settings.staleness_budget_s, settings.token_expiration_minutes)
    assert KEY not in repr(settings)


@pytest.mark.parametrize(
    "env",
    [
        {"TOKENSYNC_REGIONS": "eu"},
        {"TOKENSYNC_REGIONS": "eu=http://x"},
        {"TOKENSYNC_REGIONS": "eu=redis://a/0,eu=redis://b/0"},
        {"TOKENSYNC_SIGNING_KEYS": "k:not-base64!"},
        {"TOKENSYNC_SIGNING_KEYS": f"k:{KEY}", "TOKENSYNC_SIGNING_KEY_ID": "other"},
        {"TOKENSYNC_PARTITIONS": "many"},
        {"TOKENSYNC_STALENESS_BUDGET": "0"},
        {"TOKENSYNC_STALENESS_BUDGET": "nan"},
        {"TOKENSYNC_STALENESS_BUDGET": "inf"},
        {"TOKENSYNC_STALENESS_BUDGET": "-inf"},
        {"TOKENSYNC_STALENESS_BUDGET": "-1"},
        {"TOKENSYNC_CLOCK_SKEW_ALLOWANCE": "nan"},
        {"TOKENSYNC_CLOCK_SKEW_ALLOWANCE": "-1"},
        {"TOKENSYNC_HEARTBEAT_INTERVAL": "0"},
        {"TOKENSYNC_USAGE_INTERVAL": "inf"},
        {"TOKENSYNC_TOKEN_EXPIRATION": "-5"},
        {"TOKENSYNC_LOG_FORMAT": "xml"},
        {"TOKENSYNC_TYPO": "1"},
        {"TOKENSYNC_TOKEN_PREFIX": "a|b"},
    ],
)
def test_a_bad_setting_is_one_config_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env(env)
    assert "\n" not in str(error.value)


def test_the_settings_file_round_trips_and_the_environment_wins(tmp_path: Path) -> None:
    settings = Settings(signing_keys={"k": b"s" * 32}, signing_key_id="k", partitions=3)
    path = tmp_path / ".tokensync" / "settings.env"
    write_settings_file(path, settings.to_env())
    assert 0o600 == path.stat().st_mode & 0o777
    assert settings.to_env() == read_settings_file(path)
    loaded = Settings.load({"TOKENSYNC_PARTITIONS": "9"}, tmp_path)
    assert (9, {"k": b"s" * 32}) == (loaded.partitions, dict(loaded.signing_keys))


@pytest.mark.parametrize("budget", [float("nan"), float("inf"), -1.0, 0.0])
def test_a_policy_refuses_a_budget_that_is_not_positive_finite_seconds(budget: float) -> None:
    from shared.validator import Policy

    with pytest.raises(ConfigError):
        Policy(staleness_budget_s=budget)
    with pytest.raises(ConfigError):
        Policy(clock_skew_allowance_s=budget if budget != 0.0 else -0.5)


def test_allow_eviction_is_false_by_default_true_when_asked_and_refused_when_unclear() -> None:
    assert not Settings.from_env({}).allow_eviction
    assert Settings.from_env({"TOKENSYNC_ALLOW_EVICTION": "true"}).allow_eviction
    assert not Settings.from_env({"TOKENSYNC_ALLOW_EVICTION": "no"}).allow_eviction
    with pytest.raises(ConfigError, match="ALLOW_EVICTION"):
        Settings.from_env({"TOKENSYNC_ALLOW_EVICTION": "maybe"})
    on = Settings.from_env({"TOKENSYNC_ALLOW_EVICTION": "1"})
    assert on == Settings.from_env(on.to_env())


def test_an_unknown_store_time_zone_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="STORE_TIMEZONE"):
        Settings.from_env({"TOKENSYNC_STORE_TIMEZONE": "Mars/Olympus"})
    assert (
        "Europe/Berlin"
        == Settings.from_env({"TOKENSYNC_STORE_TIMEZONE": "Europe/Berlin"}).store_timezone
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://app:pw@db:5432/tokens?sslmode=require",
            "postgresql+psycopg://app:***@db:5432/tokens?sslmode=require",
        ),
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("mysql+pymysql://u:p%40ss@h/db", "mysql+pymysql://u:***@h/db"),
        ("sqlite:////var/lib/tokensync/store.db", "sqlite:////var/lib/tokensync/store.db"),
        ("postgresql://app@db/tokens", "postgresql://app@db/tokens"),
    ],
)
def test_a_url_shown_to_people_never_carries_its_password(url: str, shown: str) -> None:
    assert shown == redact_url(url)


def test_the_settings_file_named_by_tokensync_settings_file_is_the_one_read_and_written(
    tmp_path: Path,
) -> None:
    environ = {"TOKENSYNC_SETTINGS_FILE": "conf/stack.env"}
    assert tmp_path / "conf" / "stack.env" == settings_file_path(tmp_path, environ)
    assert tmp_path / ".tokensync" / "settings.env" == settings_file_path(tmp_path, {})
    assert tmp_path / "s" / "settings.env" == settings_file_path(
        tmp_path, {"TOKENSYNC_STATE_DIR": "s"}
    )


def test_no_note_about_the_local_stack_when_none_runs_here(tmp_path: Path) -> None:
    write_settings_file(
        tmp_path / ".tokensync" / "settings.env", {"TOKENSYNC_DATABASE_URL": "sqlite:///a.db"}
    )
    other = Settings(database_url="sqlite:///b.db")
    assert "" == local_stack_difference(other, {}, tmp_path)  # no stack.json
    (tmp_path / ".tokensync" / "stack.json").write_text('{"processes": [{"name": "kafka"}]}')
    assert "" == local_stack_difference(other, {}, tmp_path)  # unreadable record: no note


def test_the_watchs_settings_are_parsed_once_into_settings_and_read_from_the_settings_file(
    tmp_path: Path,
) -> None:
    """TOKENSYNC_DETECT_* and TOKENSYNC_WEBHOOK_* are settings like every other: the
    settings file holds them, the environment wins, a bad one is one ConfigError."""
    from shared.watch_settings import Detector, Reaction

    path = tmp_path / "settings.env"
    write_settings_file(
        path,
        {
            "TOKENSYNC_DETECT_DORMANT": "off",
            "TOKENSYNC_DETECT_MULTI_REGION_REACTION": "revoke-token",
            "TOKENSYNC_DETECT_MULTI_REGION_WINDOW": "90s",
            "TOKENSYNC_WEBHOOK_URL": "https://hooks.example/ts",
            "TOKENSYNC_WEBHOOK_SECRET": "s" * 20,
        },
    )
    environ = {
        "TOKENSYNC_SETTINGS_FILE": str(path),
        "TOKENSYNC_DETECT_PRINCIPAL_JUMP_THRESHOLD": "7",
    }
    watch = Settings.load(environ).watch
    assert not watch[Detector.DORMANT].enabled
    assert (Reaction.REVOKE_TOKEN, 90.0) == (
        watch[Detector.MULTI_REGION].reaction,
        watch[Detector.MULTI_REGION].window_s,
    )
    assert 7 == watch[Detector.PRINCIPAL_JUMP].threshold
    assert ("https://hooks.example/ts", b"s" * 20) == (watch.webhook_url, watch.webhook_secret)
    shown = repr(Settings.load(environ))  # tracebacks, debug lines
    assert "s" * 20 not in shown and "hooks.example/ts" not in shown  # a URL may be the secret
    assert Settings.load(environ) == Settings.from_env(Settings.load(environ).to_env())
    with pytest.raises(ConfigError, match="TOKENSYNC_DETECT_DORMANT_THRESHOLD"):
        Settings.from_env({"TOKENSYNC_DETECT_DORMANT_THRESHOLD": "zero"})
