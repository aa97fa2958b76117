"""Command-line commands of the token authority: ``token``, ``relay``, ``api``, ``demo``.

Each prints one line per fact for people, or JSON with ``--json`` (errors too, see
``producer.cli_support``). Every mutation writes an audit record naming the OS user
and host and the ``--reason``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from producer.audit import AuditContext
from producer.cli_support import (
    EXIT_FAILED,
    Group,
    TokenId,
    nonempty,
    open_store,
    reason_option,
    report,
    wait_option,
)
from producer.store import TokenInfo, TokenStore, iso, utcnow
from shared.cli import CliContext, emit, json_option, metrics_option, pass_cli, serve_metrics
from shared.errors import NotFoundError, UsageError
from shared.timeparse import parse_duration

__all__ = ["api", "backfill", "demo", "relay", "token"]

MAX_PRUNE_HOURS = 100 * 366 * 24  # a hundred years (the store's own limit)


@click.group(cls=Group)
def token() -> None:
    """Issue, find, list, rotate, revoke and prune tokens in the token store."""


@token.command("issue")
@click.option(
    "--type",
    "tokenable_type",
    required=True,
    callback=nonempty,
    help="Owner model, e.g. 'App\\Models\\User'.",
)
@click.option(
    "--id", "tokenable_id", required=True, help="Owner id (a whole number, UUID or ULID)."
)
@click.option("--name", required=True, callback=nonempty, help="Token name.")
@click.option(
    "--ability",
    "abilities",
    multiple=True,
    callback=nonempty,
    help="An ability (repeatable; default '*').",
)
@click.option("--expires-in", default=None, help="Lifetime: seconds, or 90s/15m/2h/7d.")
@reason_option
@json_option
@pass_cli
def issue(
    cli: CliContext,
    *,
    tokenable_type: str,
    tokenable_id: str,
    name: str,
    abilities: tuple[str, ...],
    expires_in: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Issue a token; the plaintext is printed once and never stored."""
    expires_at = None
    if expires_in is not None:
        seconds = parse_duration(expires_in)
        if seconds <= 0:
            raise UsageError("--expires-in must be positive")
        expires_at = utcnow() + dt.timedelta(seconds=seconds)
    issued = open_store(cli).issue(
        tokenable_type,
        tokenable_id,
        name,
        abilities or ("*",),
        expires_at,
        audit=AuditContext.cli(reason),
    )
    emit(as_json, issued.to_json(), issued.plain_text_token)


token_ref = [
    click.argument("token_id", type=TokenId(), required=False),
    click.option(
        "--text",
        "text",
        default=None,
        metavar="-",
        help="Read the token or its bare secret from stdin (never from the command line).",
    ),
    click.option("--hash", "token_hash", default=None, metavar="HEX", help="The token's SHA-256."),
]


def _with_token_ref(func: Any) -> Any:
    for decorator in reversed(token_ref):
        func = decorator(func)
    return func


def _resolve(
    store: TokenStore,
    token_id: int | None,
    text: str | None,
    token_hash: str | None,
    secret: str | None = None,
) -> TokenInfo:
    from producer.lookup import find_token

    if text is not None and text != "-":
        raise UsageError(
            "--text takes '-' only: pipe the token on stdin, never on the command line"
        )
    if text == "-" and secret is None:
        secret = click.get_text_stream("stdin").read()
    return find_token(store, text=secret, token_hash=token_hash, token_id=token_id)


@token.command("find")
@_with_token_ref
@json_option
@pass_cli
def find(
    cli: CliContext,
    *,
    token_id: int | None,
    text: str | None,
    token_hash: str | None,
    as_json: bool,
) -> None:
    """Show a token (by id, --text - on stdin, or --hash) and which regions accept it now."""
    from producer.lookup import hash_of, regions_accepting
    from producer.receipts import all_regions

    secret = click.get_text_stream("stdin").read() if text == "-" else None
    store = open_store(cli)
    every_region = all_regions(cli.settings, store)  # settings and `region add`
    try:
        info = _resolve(store, token_id, text, token_hash, secret)
    except NotFoundError as e:
        digest = hash_of(secret, token_hash)
        if digest is None or not every_region:
            raise
        regions = regions_accepting(cli.settings, every_region, None, digest)
        if as_json:
            body = {"error": str(e), "code": "not_found", "exit_code": EXIT_FAILED}
            click.echo(json.dumps({**body, "regions": regions}))
        else:
            click.echo(f"tokensync: error: {e}", err=True)
            click.echo("  regions    " + ", ".join(f"{n}: {a}" for n, a in regions.items()))
        raise click.exceptions.Exit(EXIT_FAILED) from None
    regions = regions_accepting(cli.settings, every_region, info)
    data = {**info.to_json(), "regions": regions}
    lines = [
        f"token {info.id}: {info.tokenable_type}:{info.tokenable_id}, name {info.name!r}",
        f"  abilities  {', '.join(info.abilities) or '(none)'}",
        f"  created    {iso(info.created_at) or '-'}",
        f"  last used  {iso(info.last_used_at) or 'never'}",
        f"  expires    {iso(info.expires_at) or 'never'}",
        f"  hash       {info.hash_prefix}...",
        "  regions    "
        + (", ".join(f"{name}: {answer}" for name, answer in regions.items()) or "none configured"),
    ]
    emit(as_json, data, lines)


@token.command("revoke")
@_with_token_ref
@reason_option
@wait_option
@json_option
@pass_cli
def revoke_token(
    cli: CliContext,
    *,
    token_id: int | None,
    text: str | None,
    token_hash: str | None,
    reason: str | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Revoke one token by id, --text - (on stdin) or --hash (deletes its row)."""
    store = open_store(cli)
    info = _resolve(store, token_id, text, token_hash)
    mutation = store.revoke_token(info.id, audit=AuditContext.cli(reason))
    report(
        cli,
        store,
        f"token {info.id} ({info.tokenable_type}:{info.tokenable_id}) revoked",
        mutation,
        wait=wait,
        as_json=as_json,
    )


@token.command("list")
@click.option("--type", "tokenable_type", required=True, callback=nonempty)
@click.option("--id", "tokenable_id", required=True)
@json_option
@pass_cli
def list_tokens(cli: CliContext, *, tokenable_type: str, tokenable_id: str, as_json: bool) -> None:
    """List one principal's tokens (hash prefixes only)."""
    tokens = open_store(cli).list_tokens(tokenable_type, tokenable_id)
    lines = [f"{'id':>8}  {'name':<20} {'abilities':<24} {'hash':<12}  expires_at"]
    lines += [
        f"{t.id:>8}  {t.name[:20]:<20} {','.join(t.abilities)[:24]:<24} {t.hash_prefix}  "
        f"{iso(t.expires_at) or '-'}"
        for t in tokens
    ]
    emit(as_json, [t.to_json() for t in tokens], lines if tokens else "no tokens")


@token.command("rotate")
@click.argument("token_id", type=TokenId())
@click.option("--grace", default="0", help="Keep the old token valid this long (e.g. 5m).")
@reason_option
@json_option
@pass_cli
def rotate(
    cli: CliContext, *, token_id: int, grace: str, reason: str | None, as_json: bool
) -> None:
    """Issue a replacement token; the old one is revoked now or after --grace."""
    issued = open_store(cli).rotate(
        token_id, int(parse_duration(grace)), audit=AuditContext.cli(reason)
    )
    emit(as_json, issued.to_json(), issued.plain_text_token)


@token.command("prune")
@click.option(
    "--hours",
    type=click.IntRange(0, MAX_PRUNE_HOURS),
    default=24,
    show_default=True,
    help="Delete tokens that expired at least this many hours ago.",
)
@reason_option
@json_option
@pass_cli
def prune(cli: CliContext, *, hours: int, reason: str | None, as_json: bool) -> None:
    """Delete expired tokens (Sanctum's sanctum:prune-expired)."""
    mutation = open_store(cli).prune_expired(hours, audit=AuditContext.cli(reason))
    emit(as_json, mutation.to_json(), f"pruned {mutation.removed} expired token(s)")


@click.command()
@metrics_option
@json_option
@pass_cli
def relay(cli: CliContext, *, metrics_port: int | None, as_json: bool) -> None:
    """Publish the outbox to Kafka (signed, acks=all, in seq order) and send heartbeats;
    also apply the regions' usage reports to last_used_at."""
    import threading

    from producer.kafka_io import KafkaAdmin, KafkaPublisher, UsageConsumer, check_credentials
    from producer.publisher import EventPublisher
    from producer.relay import Relay, RelayOptions
    from producer.usage import UsageApplier
    from producer.wakeup import waker_for
    from shared.keys import Topics
    from shared.runtime import keyring_from, stop_on_signals

    cli.configure_logging(force_json=as_json)
    settings = cli.settings
    keyring = keyring_from(settings)
    check_credentials(settings.kafka_bootstrap, settings.kafka_client)  # wrong ones: exit
    store = TokenStore.from_settings(settings)
    topics = Topics(settings.topic_prefix)

    topics_ready = threading.Event()

    def connect() -> EventPublisher:
        admin = KafkaAdmin(settings.kafka_bootstrap, client=settings.kafka_client)
        try:
            admin.ensure_topics(
                topics,
                settings.partitions,
                replication_factor=settings.kafka_replication_factor,
                min_insync_replicas=settings.kafka_min_insync_replicas,
            )
        finally:
            admin.close()
        topics_ready.set()
        return KafkaPublisher(settings.kafka_bootstrap, topics.tokens, client=settings.kafka_client)

    serve_metrics(metrics_port)
    stop = stop_on_signals()
    waker = waker_for(store.engine)
    options = RelayOptions(heartbeat_interval_s=settings.heartbeat_interval_s)
    usage = UsageApplier(
        store.engine,
        lambda: UsageConsumer(
            settings.kafka_bootstrap,
            topics.usage,
            f"{settings.topic_prefix}-usage",
            client=settings.kafka_client,
        ),
        keyring,
    )

    def apply_usage() -> None:
        # subscribe once the relay created the topics (a consumer of a missing topic
        # logs errors until it appears)
        while not topics_ready.wait(0.5):
            if stop.is_set():
                return
        usage.run(stop)

    usage_thread = threading.Thread(target=apply_usage, name="usage", daemon=True)
    usage_thread.start()
    try:
        Relay(store.engine, connect, keyring, waker, options=options).run(stop)
    finally:
        stop.set()
        usage_thread.join(timeout=10)
        waker.close()
        store.close()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@json_option
@pass_cli
def api(cli: CliContext, *, host: str, port: int, as_json: bool) -> None:
    """Serve the token store's HTTP API (OpenAPI at /docs)."""
    import uvicorn

    from producer.api import create_app

    cli.configure_logging(force_json=as_json)
    store = TokenStore.from_settings(cli.settings)
    try:
        uvicorn.run(
            create_app(cli.settings, store),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
        )
    finally:
        store.close()


@click.command()
@json_option
@pass_cli
def demo(cli: CliContext, *, as_json: bool) -> None:
    """The end-to-end story on the local stack, with measured revoke-to-denied latencies."""
    from producer.demo import run_demo

    settings = cli.settings
    store = TokenStore.from_settings(settings)
    try:
        echo = (lambda _line: None) if as_json else click.echo
        if not as_json:
            click.echo(
                f"tokensync demo: store {settings.database_url}, Kafka {settings.kafka_bootstrap}, "
                f"regions {', '.join(r.name for r in settings.regions)}"
            )
            if settings.link_delays:
                click.echo(
                    f"emulated one-way link delays to Kafka: {settings.link_delays} "
                    "(a region's revoke -> denied cannot beat its delay)"
                )
        report = run_demo(settings, store, echo)
    finally:
        store.close()
    emit(as_json, report.to_json(), ["", "all steps behaved" if report.ok else "SOME STEPS FAILED"])
    if not report.ok:
        raise click.exceptions.Exit(1)


@click.command()
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=5000,
    show_default=True,
    help="Rows per transaction.",
)
@json_option
@pass_cli
def backfill(cli: CliContext, *, batch_size: int, as_json: bool) -> None:
    """Publish the token rows that existed before tokensync was installed (resumable;
    every store start also does it, without progress)."""
    from producer.backfill import backfill as run_backfill
    from producer.schema import create_engine, migrate

    engine = create_engine(cli.settings.database_url)
    try:
        migrate(engine, backfill_rows=False)

        def progress(done: int, total: int) -> None:
            if not as_json:
                click.echo(f"backfill: {done}/{total} rows", err=True)

        result = run_backfill(
            engine, batch_size=batch_size, progress=progress, audit=AuditContext.cli()
        )
    finally:
        engine.dispose()
    emit(
        as_json,
        {"rows": result.rows, "batches": result.batches},
        f"backfill done: {result.rows} row(s) in {result.batches} batch(es)",
    )
