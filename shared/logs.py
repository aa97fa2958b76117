"""Logging setup, done once per entry point: one format for our lines and the libraries'.

Every line goes through one handler on the stdlib root logger, formatted by structlog's
``ProcessorFormatter``: tokensync's own structlog lines and those of the libraries that log
with the standard library (faust, mode, aiokafka, kafka-python, uvicorn, SQLAlchemy), so
JSON mode is JSON on every line. Context variables are merged first (a worker binds its
region), timestamps are ISO UTC, output is JSON when stderr is not a terminal (or
``TOKENSYNC_LOG_FORMAT=json``, ``--json``) and coloured console lines when it is.

tokensync's lines are filtered at the configured level; the libraries' at the configured
level but never below ``warning`` (their info lines are chatter about their internals).
A library line carries ``logger`` (its logger name) instead of ``module``.
"""

from __future__ import annotations

import logging
import sys
from importlib.util import find_spec
from typing import TextIO

import structlog

__all__ = ["LOGGER_NAME", "configure_default_logging", "configure_logging", "get_logger"]

LOGGER_NAME = "tokensync"  # the stdlib logger every tokensync line goes through

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _drop_logger_name_of_ours(
    _logger: object, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Our lines name their module; the ``logger`` key is for the libraries'."""
    if event.get("logger") == LOGGER_NAME:
        del event["logger"]
    return event


def _ours(*_names: object) -> logging.Logger:
    """structlog's logger factory: every tokensync line goes through one stdlib logger."""
    return logging.getLogger(LOGGER_NAME)


def _console_tracebacks() -> structlog.typing.ExceptionRenderer:
    """Tracebacks at a terminal without the frames' local variables (structlog's rich
    default shows them: tokens, passwords, signing keys)."""
    if find_spec("rich") is None:
        return structlog.dev.plain_traceback
    return structlog.dev.RichTracebackFormatter(show_locals=False)


#: Library loggers that their own logging set-up may detach from the root handler.
_DETACHABLE = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "alembic",
    "sqlalchemy",
    "faust",
    "mode",
    "aiokafka",
    "kafka",
)


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger (one handler) for this process."""
    out = stream or sys.stderr
    numeric = _LEVELS.get(level.lower(), logging.INFO)
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(exception_formatter=_console_tracebacks())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_ours,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # lines of libraries logging with the standard library
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_logger_name_of_ours,
            *([] if use_console else [structlog.processors.format_exc_info]),
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
    for name in _DETACHABLE:
        # a library's own logging config (uvicorn's default LOGGING_CONFIG, alembic's
        # fileConfig) gives its loggers handlers of their own, a level and propagate=False:
        # their lines would bypass this format; they go through the root handler again
        library = logging.getLogger(name)
        for old in list(library.handlers):
            library.removeHandler(old)
        library.setLevel(logging.NOTSET)
        library.propagate = True
    logging.captureWarnings(True)  # Python's warnings too (logger py.warnings)
    ours = logging.getLogger(LOGGER_NAME)
    ours.setLevel(numeric)
    ours.propagate = True


def configure_default_logging() -> None:
    """For commands that do not configure logging (the short ones): warnings and errors on
    stderr, nothing on stdout (which carries their result). A no-op once structlog was
    configured in this process (a long-running command, a test session)."""
    if not structlog.is_configured():
        configure_logging("warning", "auto")


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger bound with the module name."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(module=name)
    return logger
