"""``tokensync gate``: the regional token gate for proxies and RFC 7662 clients."""

from __future__ import annotations

import click

from shared.cli import CliContext, pass_cli

__all__ = ["gate"]


@click.command(
    epilog="\b\nExamples:\n"
    "  tokensync gate --region eu --host 0.0.0.0 --port 8181\n"
    "  tokensync gate --region eu --on-unavailable fallback --workers 4",
)
@click.option("--region", required=True, help="Region whose Redis answers.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8181, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes sharing the port (one per core is the most that helps).",
)
@click.option(
    "--on-unavailable",
    type=click.Choice(["deny", "fallback"]),
    default="deny",
    show_default=True,
    help="When the region is stale: answer 503, or ask the token store (needs producer).",
)
@click.option("--no-near-cache", is_flag=True, help="Ask Redis on every request.")
@click.option("--no-usage", is_flag=True, help="Do not record last-used times.")
@click.option(
    "--cookie-name",
    default="tokensync_token",
    show_default=True,
    help="Cookie carrying the token for browsers (X-XSRF-TOKEN on unsafe methods).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON log lines.")
@pass_cli
def gate(
    cli: CliContext,
    *,
    region: str,
    host: str,
    port: int,
    workers: int,
    on_unavailable: str,
    no_near_cache: bool,
    no_usage: bool,
    cookie_name: str,
    as_json: bool,
) -> None:
    """Serve /auth (nginx auth_request, Envoy ext_authz, Traefik ForwardAuth),
    /introspect (RFC 7662, HTTP Basic client auth), /healthz and /metrics for REGION."""
    from gate.server import GateOptions, bind, run

    cli.configure_logging(force_json=as_json)
    settings = cli.settings
    settings.region(region)
    try:
        sock = bind(host, port)
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror}") from e
    options = GateOptions(
        region=region,
        host=host,
        port=port,
        workers=workers,
        near_cache=not no_near_cache,
        usage=not no_usage,
        on_unavailable=on_unavailable,
        cookie_name=cookie_name,
    )
    run(settings, options, sock)
