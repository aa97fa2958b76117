"""Review: at a terminal (console log format) an exception's traceback does not print the
frames' local variables, which hold tokens, passwords and signing keys."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from shared.logs import configure_logging, get_logger

SECRET = "7|Q2hpY2tlbnNBbmRXYWZmbGVzQXJlR3JlYXQxMjM0NTY3ODkwab12cd34"


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("info", "console", stream)
    yield stream
    configure_logging("info", "json")  # as tests/conftest.py leaves it


def _validate(token: str) -> None:
    presented = token  # a local, as in any function handling a token
    raise ValueError(f"cannot parse a token of {len(presented)} characters")


def test_our_exception_lines_at_a_terminal_show_no_local_variables(
    console: io.StringIO,
) -> None:
    try:
        _validate(SECRET)
    except ValueError:
        get_logger("review").exception("validation_failed")
    text = console.getvalue()
    assert "cannot parse a token" in text  # the traceback is there
    assert SECRET not in text


def test_a_library_s_exception_line_at_a_terminal_shows_no_local_variables(
    console: io.StringIO,
) -> None:
    try:
        _validate(SECRET)
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    text = console.getvalue()
    assert "cannot parse a token" in text
    assert SECRET not in text


def test_a_library_that_configured_its_own_logging_first_still_goes_through_our_format(
    console: io.StringIO,
) -> None:
    """uvicorn started with its default LOGGING_CONFIG (any in-process server does) gives
    its loggers their own handlers and propagate=False; configuring ours afterwards brings
    them back to our one format (CI saw this suite order lose the line)."""
    import logging.config

    from uvicorn.config import LOGGING_CONFIG

    logging.config.dictConfig(LOGGING_CONFIG)
    configure_logging("info", "console", console)
    try:
        _validate(SECRET)
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    logging.getLogger("uvicorn.access").warning("an access line")
    text = console.getvalue()
    assert "cannot parse a token" in text and "an access line" in text
    assert SECRET not in text
