"""The ``tokensync`` command line: a root group that finds its commands through entry points.

Each package contributes commands under the ``tokensync.commands`` entry-point
group, so ``shared`` never imports ``producer`` or ``workers``. Settings are
parsed once, on first use, and handed to commands through ``CliContext``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

import click

from shared.errors import TokenSyncError
from shared.logs import configure_default_logging, configure_logging
from shared.settings import Settings

__all__ = [
    "CliContext",
    "emit",
    "json_option",
    "main",
    "metrics_option",
    "pass_cli",
    "root",
    "serve_metrics",
]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliContext:
    """What every command receives: the environment, the working directory, the settings."""

    environ: Mapping[str, str]
    cwd: Path
    overrides: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def settings(self) -> Settings:
        """Settings from the settings file and the environment, parsed once."""
        settings = Settings.load(self.environ, self.cwd)
        return settings.with_overrides(**self.overrides) if self.overrides else settings

    def configure_logging(self, force_json: bool = False) -> None:
        """Configure structlog from the settings (long-running commands call this);
        their ``--json`` forces JSON log lines."""
        configure_logging(
            self.settings.log_level, "json" if force_json else self.settings.log_format
        )


pass_cli = click.make_pass_decorator(CliContext)


def json_option(func: F) -> F:
    """The ``--json`` flag every command carries."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(func)


def metrics_option(func: F) -> F:
    """The ``--metrics-port`` option of the long-running commands."""
    return click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        default=None,
        help="Serve Prometheus metrics on this port (127.0.0.1).",
    )(func)


def serve_metrics(port: int | None) -> None:
    """Serve this process's Prometheus metrics on ``port`` (nothing if None)."""
    if port is not None:
        from prometheus_client import start_http_server

        start_http_server(port, addr="127.0.0.1")


def emit(as_json: bool, data: Any, text: str | Sequence[str]) -> None:
    """Print ``data`` as JSON, or ``text`` (a string or lines) for people."""
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    elif isinstance(text, str):
        click.echo(text)
    else:
        for line in text:
            click.echo(line)


class _EntryPointGroup(click.Group):
    """A group whose subcommands are the ``tokensync.commands`` entry points."""

    def _loaded(self) -> dict[str, click.Command]:
        commands = dict(self.commands)
        for ep in entry_points(group="tokensync.commands"):
            if ep.name not in commands:
                command = ep.load()
                if isinstance(command, click.Command):
                    commands[ep.name] = command
        return commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self._loaded())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._loaded().get(cmd_name)


@click.group(cls=_EntryPointGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tokensync", prog_name="tokensync")
@click.pass_context
def root(ctx: click.Context) -> None:
    """tokensync: Sanctum-style API tokens, validated locally in every region.

    Settings come from TOKENSYNC_* variables and .tokensync/settings.env
    (written by `tokensync stack up`).
    """
    if ctx.obj is None:
        ctx.obj = CliContext(environ=dict(os.environ), cwd=Path.cwd())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; errors become one line on stderr and a non-zero exit. An
    unexpected exception's traceback goes to the crash log (``crash_log_path``), never to
    the screen."""
    configure_default_logging()  # stdout carries results: log lines never go there
    try:
        return _run(argv)
    except Exception as e:  # a bug or an unforeseen failure: one line here, the rest logged
        log = _log_crash(e, argv)
        what = " ".join(_command_path(argv)) or "the command"
        where = f"traceback in {log}" if log else "the traceback could not be saved"
        click.echo(f"tokensync: {what} failed unexpectedly: {_one_line(e)} ({where})", err=True)
        return 1


def _one_line(error: BaseException) -> str:
    """``Type: message`` on one line (drivers' messages span several)."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _run(argv: Sequence[str] | None) -> int:
    try:
        result = root.main(
            args=list(argv) if argv is not None else None,
            prog_name="tokensync",
            standalone_mode=False,
        )
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("tokensync: aborted", err=True)
        return 130
    except click.ClickException as e:
        click.echo(f"tokensync: {e.format_message()}", err=True)
        return e.exit_code
    except TokenSyncError as e:
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        click.echo(f"tokensync: error: {message}", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return result if isinstance(result, int) else 0


def _command_path(argv: Sequence[str] | None) -> list[str]:
    """The command words of ``argv`` (``["region", "add"]``): never its arguments, which may
    hold a token."""
    words = list(argv) if argv is not None else sys.argv[1:]
    path: list[str] = []
    command: click.Command = root
    ctx = click.Context(root)
    for word in words:
        if word.startswith("-"):
            continue
        if not isinstance(command, click.Group):
            break
        sub = command.get_command(ctx, word)
        if sub is None:
            break
        path.append(word)
        command = sub
    return path


def crash_log_path(cwd: Path | None = None) -> Path:
    """Where unexpected errors' tracebacks go: the local stack's log directory when this
    directory has one, else the user's cache directory."""
    state = (cwd or Path.cwd()) / ".tokensync"
    if state.is_dir():
        return state / "logs" / "cli-errors.log"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "tokensync" / "cli-errors.log"


def _log_crash(error: BaseException, argv: Sequence[str] | None) -> Path | None:
    """Append the traceback (with the command words, never its arguments) to the crash log."""
    import datetime
    import traceback

    path = crash_log_path()
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    text = "".join(traceback.format_exception(error))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write(f"--- {when} tokensync {' '.join(_command_path(argv))}\n{text}\n")
    except OSError:
        return None
    return path


if __name__ == "__main__":
    sys.exit(main())
