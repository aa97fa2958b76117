"""Command-line commands of the token authority: ``token``, ``revoke``, ``relay``.

Each prints one line per fact for people, or JSON with ``--json``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from producer.store import Mutation, TokenStore, iso, utcnow
from shared.cli import CliContext, emit, json_option, metrics_option, pass_cli, serve_metrics
from shared.errors import UsageError
from shared.timeparse import parse_duration, parse_instant

__all__ = ["api", "demo", "relay", "revoke", "token"]


def _store(cli: CliContext) -> TokenStore:
    return TokenStore.from_settings(cli.settings)


def _report(
    cli: CliContext, store: TokenStore, what: str, mutation: Mutation, *, wait: bool, as_json: bool
) -> None:
    data: dict[str, Any] = mutation.to_json()
    lines = [f"{what}: seq {mutation.seq}, {mutation.removed} row(s) removed from the store"]
    if wait:
        from producer.receipts import wait_for_receipt

        receipt = wait_for_receipt(cli.settings, store, mutation.seq)
        data["receipt"] = receipt.to_json()
        lines.append(receipt.summary())
        emit(as_json, data, lines)
        if not receipt.complete:
            raise click.exceptions.Exit(4)
        return
    emit(as_json, data, lines)


def _nonempty(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    items = value if isinstance(value, tuple) else (value,)
    if any(isinstance(v, str) and not v.strip() for v in items):
        raise click.BadParameter("must not be empty")
    return value


wait_option = click.option(
    "--wait", is_flag=True, help="Wait until every region enforces it and print the receipt."
)


@click.group()
def token() -> None:
    """Issue, list, rotate, revoke and prune tokens in the token store."""


@token.command("issue")
@click.option(
    "--type",
    "tokenable_type",
    required=True,
    callback=_nonempty,
    help="Owner model, e.g. 'App\\Models\\User'.",
)
@click.option("--id", "tokenable_id", required=True, help="Owner id (a whole number).")
@click.option("--name", required=True, callback=_nonempty, help="Token name.")
@click.option(
    "--ability",
    "abilities",
    multiple=True,
    callback=_nonempty,
    help="An ability (repeatable; default '*').",
)
@click.option("--expires-in", default=None, help="Lifetime: seconds, or 90s/15m/2h/7d.")
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
    as_json: bool,
) -> None:
    """Issue a token; the plaintext is printed once and never stored."""
    expires_at = None
    if expires_in is not None:
        seconds = parse_duration(expires_in)
        if seconds <= 0:
            raise UsageError("--expires-in must be positive")
        expires_at = utcnow() + dt.timedelta(seconds=seconds)
    issued = _store(cli).issue(tokenable_type, tokenable_id, name, abilities or ("*",), expires_at)
    emit(as_json, issued.to_json(), issued.plain_text_token)


@token.command("revoke")
@click.argument("token_id", type=int)
@wait_option
@json_option
@pass_cli
def revoke_token(cli: CliContext, *, token_id: int, wait: bool, as_json: bool) -> None:
    """Revoke one token by id (deletes its row; regions keep a tombstone)."""
    store = _store(cli)
    _report(
        cli,
        store,
        f"token {token_id} revoked",
        store.revoke_token(token_id),
        wait=wait,
        as_json=as_json,
    )


@token.command("list")
@click.option("--type", "tokenable_type", required=True, callback=_nonempty)
@click.option("--id", "tokenable_id", required=True)
@json_option
@pass_cli
def list_tokens(cli: CliContext, *, tokenable_type: str, tokenable_id: str, as_json: bool) -> None:
    """List one principal's tokens (hash prefixes only)."""
    tokens = _store(cli).list_tokens(tokenable_type, tokenable_id)
    lines = [f"{'id':>8}  {'name':<20} {'abilities':<24} {'hash':<12}  expires_at"]
    lines += [
        f"{t.id:>8}  {t.name[:20]:<20} {','.join(t.abilities)[:24]:<24} {t.hash_prefix}  "
        f"{iso(t.expires_at) or '-'}"
        for t in tokens
    ]
    emit(as_json, [t.to_json() for t in tokens], lines if tokens else "no tokens")


@token.command("rotate")
@click.argument("token_id", type=int)
@click.option("--grace", default="0", help="Keep the old token valid this long (e.g. 5m).")
@json_option
@pass_cli
def rotate(cli: CliContext, *, token_id: int, grace: str, as_json: bool) -> None:
    """Issue a replacement token; the old one is revoked now or after --grace."""
    issued = _store(cli).rotate(token_id, int(parse_duration(grace)))
    emit(as_json, issued.to_json(), issued.plain_text_token)


@token.command("prune")
@click.option(
    "--hours",
    type=click.IntRange(min=0),
    default=24,
    show_default=True,
    help="Delete tokens that expired at least this many hours ago.",
)
@json_option
@pass_cli
def prune(cli: CliContext, *, hours: int, as_json: bool) -> None:
    """Delete expired tokens (Sanctum's sanctum:prune-expired)."""
    mutation = _store(cli).prune_expired(hours)
    emit(as_json, mutation.to_json(), f"pruned {mutation.removed} expired token(s)")


@click.group()
def revoke() -> None:
    """Mass revocation: one epoch event per scope, whatever the number of tokens."""


@revoke.command("principal")
@click.option("--type", "tokenable_type", required=True, callback=_nonempty)
@click.option("--id", "tokenable_id", required=True)
@wait_option
@json_option
@pass_cli
def revoke_principal(
    cli: CliContext, *, tokenable_type: str, tokenable_id: str, wait: bool, as_json: bool
) -> None:
    """Revoke every token of one principal issued until now."""
    store = _store(cli)
    mutation = store.revoke_principal(tokenable_type, tokenable_id)
    _report(
        cli,
        store,
        f"tokens of {tokenable_type}:{tokenable_id} revoked",
        mutation,
        wait=wait,
        as_json=as_json,
    )


@revoke.command("ability")
@click.argument("ability", callback=_nonempty)
@wait_option
@json_option
@pass_cli
def revoke_ability(cli: CliContext, *, ability: str, wait: bool, as_json: bool) -> None:
    """Revoke every token whose abilities list ABILITY literally."""
    store = _store(cli)
    mutation = store.revoke_ability(ability)
    _report(
        cli, store, f"tokens with ability {ability!r} revoked", mutation, wait=wait, as_json=as_json
    )


@revoke.command("all")
@click.option("--before", required=True, help="'now', ISO 8601, or Unix seconds.")
@wait_option
@json_option
@pass_cli
def revoke_all(cli: CliContext, *, before: str, wait: bool, as_json: bool) -> None:
    """Revoke every token issued before a time."""
    store = _store(cli)
    mutation = store.revoke_all(parse_instant(before))
    _report(
        cli, store, f"tokens issued before {before} revoked", mutation, wait=wait, as_json=as_json
    )


@click.command()
@metrics_option
@json_option
@pass_cli
def relay(cli: CliContext, *, metrics_port: int | None, as_json: bool) -> None:
    """Publish the outbox to Kafka (signed, acks=all, in seq order) and send heartbeats;
    also apply the regions' usage reports to last_used_at."""
    import threading

    from producer.kafka_io import KafkaAdmin, KafkaPublisher, UsageConsumer
    from producer.publisher import EventPublisher
    from producer.relay import Relay, RelayOptions
    from producer.usage import UsageApplier
    from producer.wakeup import waker_for
    from shared.keys import Topics
    from shared.runtime import keyring_from, stop_on_signals

    cli.configure_logging(force_json=as_json)
    settings = cli.settings
    keyring = keyring_from(settings)
    store = TokenStore.from_settings(settings)
    topics = Topics(settings.topic_prefix)

    topics_ready = threading.Event()

    def connect() -> EventPublisher:
        admin = KafkaAdmin(settings.kafka_bootstrap)
        try:
            admin.ensure_topics(topics, settings.partitions)
        finally:
            admin.close()
        topics_ready.set()
        return KafkaPublisher(settings.kafka_bootstrap, topics.tokens)

    serve_metrics(metrics_port)
    stop = stop_on_signals()
    waker = waker_for(store.engine)
    options = RelayOptions(heartbeat_interval_s=settings.heartbeat_interval_s)
    usage = UsageApplier(
        store.engine,
        lambda: UsageConsumer(
            settings.kafka_bootstrap, topics.usage, f"{settings.topic_prefix}-usage"
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
