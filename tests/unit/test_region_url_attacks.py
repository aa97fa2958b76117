"""Review attacks on region URLs with replicas: a mistyped URL is one clear ConfigError,
and no error repeats a Redis password, not even a piece of it. Each test failed on the
code before its fix."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.settings import Settings

SECRET = "pa55,w0rd"  # a password with a comma: split_regions cuts it in two


def _error(regions: str) -> str:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {"TOKENSYNC_DATABASE_URL": "sqlite:///x.db", "TOKENSYNC_REGIONS": regions}
        )
    return str(caught.value)


@pytest.mark.parametrize(
    "regions",
    [
        f"eu=redis://:{SECRET}@eu.example:6379/0",
        f"eu=redis://eu.example/0;replicas=redis://:{SECRET}@r1.example/0",
    ],
)
def test_a_password_with_a_comma_shows_no_piece_of_itself_in_the_error(regions: str) -> None:
    message = _error(regions)
    assert "w0rd" not in message and "pa55" not in message, message
    assert "%2C" in message  # says how to write it


@pytest.mark.parametrize(
    "regions",
    [
        "eu=redis://:s3cret@[::1/0",  # urlsplit cannot parse it
        "eu=redis://eu.example/0;replicas=redis://:s3cret@[r1/0",
        "eu=rediss//:s3cret@eu.example/0",  # no scheme at all
        "eu=redis://:s3c/ret@eu.example:6379/0",  # '/', '?', '#' end the netloc early
        "eu=redis://:12?s3cret@eu.example/0",
        "eu=redis://eu.example/0;replicas=redis://:12#s3cret@r1.example/0",
    ],
)
def test_a_url_that_does_not_parse_shows_no_password(regions: str) -> None:
    message = _error(regions)
    assert "s3c" not in message, message
    assert "eu" in message


@pytest.mark.parametrize(
    "regions",
    [
        "eu=redis://:s3cret@eu.example:99999/0",
        "eu=redis://eu.example/0;replicas=redis://:s3cret@r1.example:abc/0",
    ],
)
def test_a_bad_port_is_a_config_error_naming_the_region_without_the_password(
    regions: str,
) -> None:
    message = _error(regions)
    assert "s3cret" not in message
    assert "region eu" in message and "port" in message


@pytest.mark.parametrize(
    "regions",
    [
        "eu=redis://p.example:6379/0;replicas=redis://r1.example:6379/1",
        "eu=redis://p.example:6379/2;replicas=redis://r1.example:6379",
        "eu=redis://p.example/0;replicas=redis://r1.example/0?db=3",
    ],
)
def test_a_replica_read_in_another_database_than_its_primary_is_a_clear_error(
    regions: str,
) -> None:
    """A replica mirrors every database of its primary: read in another one it holds no
    cache (every answer unavailable, every receipt pending forever)."""
    message = _error(regions)
    assert "region eu" in message and "database" in message, message


@pytest.mark.parametrize(
    "read_from", ["redis://:s3cret@r1.example:6379/0", "redis://:s3cret@r1.example:6379"]
)
def test_a_url_given_as_read_from_shows_no_password_in_the_error(read_from: str) -> None:
    """An operator who writes the replica's URL instead of its host:port."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {
                "TOKENSYNC_DATABASE_URL": "sqlite:///x.db",
                "TOKENSYNC_REGIONS": "eu=redis://p.example/0;replicas=redis://r1.example/0",
                "TOKENSYNC_READ_FROM": read_from,
            }
        )
    assert "s3cret" not in str(caught.value), caught.value
    assert "READ_FROM" in str(caught.value)
