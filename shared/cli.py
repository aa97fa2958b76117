"""The ``tokensync`` command line: a root group that finds its commands through entry points.

Each package contributes commands under the ``tokensync.commands`` entry-point
group, so ``shared`` never imports ``producer`` or ``workers``. Settings are
parsed once, on first use, and handed to commands through ``CliContext``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.utils import make_default_short_help

from shared.errors import TokenSyncError
from shared.extras import COMMANDS, MissingExtraError, check_extra, missing_extra
from shared.logs import configure_default_logging, configure_logging
from shared.settings import Settings, local_stack_difference

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

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
        if note := local_stack_difference(settings, self.environ, self.cwd):
            click.echo(note, err=True)
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


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group="tokensync.commands")}


class _EntryPointGroup(click.Group):
    """A group whose subcommands are the ``tokensync.commands`` entry points, each imported
    only when it runs: listing, help and completion of names read ``shared.extras.COMMANDS``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(_entry_points()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        ep = _entry_points().get(cmd_name)
        if ep is None:
            return None
        check_extra(cmd_name)
        try:
            command = ep.load()
        except ModuleNotFoundError as e:
            line = missing_extra(e, cmd_name)
            if line is None:
                raise
            raise MissingExtraError(line) from e
        if not isinstance(command, click.Command):
            return None
        self.commands[cmd_name] = command
        return command

    def _short_help(self, name: str, limit: int) -> str:
        loaded = self.commands.get(name)
        if loaded is not None:
            return loaded.get_short_help_str(limit)
        info = COMMANDS.get(name)
        return make_default_short_help(info.help, limit) if info else ""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = [
            n for n in self.list_commands(ctx) if not getattr(self.commands.get(n), "hidden", False)
        ]
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        with formatter.section("Commands"):
            formatter.write_dl([(n, self._short_help(n, limit)) for n in names])

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        items = [
            CompletionItem(n, help=self._short_help(n, 45))
            for n in self.list_commands(ctx)
            if n.startswith(incomplete)
        ]
        items.extend(click.Command.shell_complete(self, ctx, incomplete))
        return items


@click.group(
    cls=_EntryPointGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="\b\nExamples:\n"
    "  tokensync token issue --type 'App\\Models\\User' --id 42 --name ci --ability orders:read\n"
    "  tokensync validate - --region eu --ability orders:read < token.txt",
)
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
        if isinstance(e, ModuleNotFoundError):  # a lazy import of an extra not installed
            path = _command_path(argv)
            line = missing_extra(e, path[0] if path else None)
            if line is not None:
                click.echo(f"tokensync: {line}", err=True)
                return 1
        log = _log_crash(e, argv)
        what = " ".join(_command_path(argv)) or "the command"
        where = f"traceback in {log}" if log else "the traceback could not be saved"
        shown = _SECRET_LIKE.sub("not shown", _one_line(e))
        click.echo(f"tokensync: {what} failed unexpectedly: {shown} ({where})", err=True)
        return 1


def _one_line(error: BaseException) -> str:
    """``Type: message`` on one line (drivers' messages span several)."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


# a token (``id|secret``) or any run of 32+ letters and digits: a secret, not a word
_SECRET_LIKE = re.compile(r"(?:\d+\|)?[A-Za-z0-9]*[A-Za-z0-9]{32,}")


def _failed(argv: Sequence[str], message: str, code: str, exit_code: int) -> int:
    """A failure: one line on stderr, or with ``--json`` one ``{error, code, exit_code}``
    document on stdout (the shape every command's JSON failures share)."""
    # click lists a choice's values on lines of their own: one line all the same
    message = " ".join(line.strip() for line in message.splitlines() if line.strip())
    # click repeats unexpected arguments: a token pasted there is not shown again
    message = _SECRET_LIKE.sub("not shown", message)
    if "--json" in argv:
        click.echo(json.dumps({"error": message, "code": code, "exit_code": exit_code}))
    else:
        click.echo(f"tokensync: {message}", err=True)
    return exit_code


def _run(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
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
        code = "usage" if isinstance(e, click.UsageError) else "error"
        return _failed(args, e.format_message(), code, e.exit_code)
    except TokenSyncError as e:
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        kind = type(e).__name__.removesuffix("Error").lower() or "error"
        return _failed(args, f"error: {message}" if "--json" not in args else message, kind, 1)
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
        try:
            sub = command.get_command(ctx, word)
        except click.ClickException:  # its extra is missing: the word is still a command
            path.append(word)
            break
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
        # owner only: a driver's message in a traceback may carry what the operator typed
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            out.write(f"--- {when} tokensync {' '.join(_command_path(argv))}\n{text}\n")
    except OSError:
        return None
    return path


if __name__ == "__main__":
    sys.exit(main())
