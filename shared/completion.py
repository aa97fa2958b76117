"""``tokensync completion bash|zsh|fish``: print click's shell completion script.

Completing command names reads the root's table (``shared.extras.COMMANDS``), so a
``<TAB>`` imports no command module; completing a command's options loads that one only.
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

__all__ = ["completion"]

SHELLS = ("bash", "zsh", "fish")


@click.command(
    epilog="\b\nExamples:\n"
    '  eval "$(tokensync completion bash)"   # in ~/.bashrc; zsh: the same in ~/.zshrc\n'
    "  tokensync completion fish > ~/.config/fish/completions/tokensync.fish",
)
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish."""
    from shared.cli import root

    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click ships all three
        raise click.UsageError(f"click has no completion for {shell}")
    script = cls(root, {}, "tokensync", "_TOKENSYNC_COMPLETE").source()
    click.echo(script)
