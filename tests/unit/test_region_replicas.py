"""A region's primary and read replicas: parsing, errors, redaction, the read choice."""

from __future__ import annotations

import random

import pytest

from shared.errors import ConfigError
from shared.region_url import choose_read_url
from shared.settings import Region, Settings, parse_regions, redact_regions, redact_url

SPEC = "redis://:pw@p:6379/0;replicas=redis://:secret1@r1:6380/0,redis://r2:6381/0?password=s2"


def test_a_region_url_names_its_primary_and_replicas_and_the_next_region_still_parses() -> None:
    eu, us = parse_regions(f"eu={SPEC},us=redis://u:6379/1")
    assert eu.redis_url == "redis://:pw@p:6379/0"
    assert eu.replicas == ("redis://:secret1@r1:6380/0", "redis://r2:6381/0?password=s2")
    assert us == Region("us", "redis://u:6379/1")
    assert us.replicas == ()


def test_regions_with_replicas_survive_a_round_trip_through_the_environment() -> None:
    settings = Settings.from_env({"TOKENSYNC_REGIONS": f"eu={SPEC},us=redis://u/0"})
    again = Settings.from_env(settings.to_env())
    assert again.regions == settings.regions
    assert again.region("eu").spec == SPEC


def test_a_region_given_as_one_url_with_replicas_is_split_into_primary_and_replicas() -> None:
    assert Region("eu", SPEC) == parse_regions(f"eu={SPEC}")[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("eu=redis://p/0;replicas=", "names no replica"),
        ("eu=redis://p/0;replicas=http://r/0", "is not a redis:// URL"),
        ("eu=redis://p/0;replica=redis://r/0", "';replicas=URL,URL'"),
        ("eu=redis://p:6379/0;replicas=redis://p:6379/1", "named twice: p:6379"),
        ("eu=redis://p/0,redis://r/0", "must be NAME=redis://"),
        ("eu=redis+sentinel://s:26379/mymaster/0", "Sentinel URLs are not supported"),
    ],
)
def test_a_wrong_region_url_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        parse_regions(text)


def test_no_replica_password_is_shown_where_a_region_is_shown() -> None:
    settings = Settings.from_env({"TOKENSYNC_REGIONS": f"eu={SPEC},us=redis://:pw3@u/0"})
    shown = [
        repr(settings.region("eu")),
        redact_url(SPEC),
        redact_regions(settings.to_env()["TOKENSYNC_REGIONS"]),
        repr(settings),
    ]
    for text in shown:
        for secret in ("pw", "secret1", "s2", "pw3"):
            assert f":{secret}@" not in text and f"={secret}" not in text, text
        assert "r1:6380" in text or "Settings(" in text


def test_a_validator_reads_the_replica_it_is_told_to_and_falls_back_to_the_primary() -> None:
    eu = parse_regions(f"eu={SPEC}")[0]
    url = eu.url
    assert choose_read_url(url, "primary") == (eu.redis_url, None)
    assert choose_read_url(url, "r2:6381") == (eu.replicas[1], eu.redis_url)
    picked = {choose_read_url(url, "replica", random.Random(n))[0] for n in range(20)}
    assert picked == set(eu.replicas)
    assert choose_read_url(Region("us", "redis://u/0").url, "replica") == ("redis://u/0", None)
    with pytest.raises(ConfigError, match="names no replica of this region"):
        choose_read_url(url, "r9:6379")


@pytest.mark.parametrize("value", ["secondary", "r1", "r1:port"])
def test_a_wrong_read_from_setting_is_a_clear_error(value: str) -> None:
    with pytest.raises(ConfigError, match="READ_FROM must be primary, replica"):
        Settings.from_env({"TOKENSYNC_READ_FROM": value})
