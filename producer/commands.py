"""Command-line commands of the token authority: ``token``, ``revoke``, ``audit``, ``relay``.

Each prints one line per fact for people, or JSON with ``--json`` (errors too:
``{"error": ..., "code": ...}`` on stdout, with the same exit code). Exit codes:
0 done, 1 failed or not found, 2 bad input or a refused request (a future
``--before``, a missing ``--yes`` or ``--reason``), 4 a receipt not complete in time.
Every mutation writes an audit record naming the OS user and host and the ``--reason``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any, NoReturn

import click

from producer.audit import AuditContext
from producer.store import Mutation, TokenInfo, TokenStore, iso, utcnow
from shared.cli import CliContext, emit, json_option, metrics_option, pass_cli, serve_metrics
from shared.errors import NotFoundError, TokenSyncError, UsageError
from shared.timeparse import parse_duration, parse_instant

__all__ = ["api", "audit", "demo", "relay", "revoke", "token"]

EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE = 1, 2, 4


def _fail(as_json: bool, message: str, code: str, exit_code: int) -> NoReturn:
    if as_json:
        click.echo(json.dumps({"error": message, "code": code, "exit_code": exit_code}))
    else:
        click.echo(f"tokensync: error: {message}", err=True)
    raise click.exceptions.Exit(exit_code)


def _classify(error: TokenSyncError) -> tuple[str, int]:
    if isinstance(error, UsageError):
        return "usage", EXIT_USAGE
    if isinstance(error, NotFoundError):
        return "not_found", EXIT_FAILED
    return type(error).__name__.removesuffix("Error").lower() or "error", EXIT_FAILED


class _Command(click.Command):
    """A command whose errors are one line (or JSON with ``--json``) and a fixed exit code."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        wants_json = "--json" in args  # parsing consumes ``args``
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as e:
            if not wants_json:
                raise
            _fail(True, e.format_message(), "usage", e.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        as_json = bool(ctx.params.get("as_json"))
        try:
            return super().invoke(ctx)
        except TokenSyncError as e:
            code, exit_code = _classify(e)
            _fail(as_json, str(e), code, exit_code)


class _Group(click.Group):
    command_class = _Command


def _store(cli: CliContext) -> TokenStore:
    store = TokenStore.from_settings(cli.settings)
    click.get_current_context().call_on_close(store.close)
    return store


def _report(
    cli: CliContext,
    store: TokenStore,
    what: str,
    mutation: Mutation,
    *,
    wait: bool,
    as_json: bool,
    extra: list[str] | None = None,
    data_extra: dict[str, Any] | None = None,
) -> None:
    data: dict[str, Any] = {**mutation.to_json(), **(data_extra or {})}
    lines = [f"{what}: seq {mutation.seq}, {mutation.removed} row(s) removed from the store"]
    lines += extra or []
    if mutation.audit_id is not None:
        lines.append(f"audit record {mutation.audit_id}")
    if wait:
        from producer.audit import attach_complete_receipt
        from producer.receipts import wait_for_receipt

        receipt = wait_for_receipt(cli.settings, store, mutation.seq)
        data["receipt"] = receipt.to_json()
        lines.append(receipt.summary())
        attach_complete_receipt(store.engine, mutation.audit_id, receipt)
        emit(as_json, data, lines)
        if not receipt.complete:
            raise click.exceptions.Exit(EXIT_INCOMPLETE)
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
reason_option = click.option(
    "--reason", default=None, help="Why (kept in the audit record; required for mass revocations)."
)
dry_run_option = click.option(
    "--dry-run",
    is_flag=True,
    help="Only count the stored tokens the scope covers now, per principal type.",
)


def _require_reason(reason: str | None, dry_run: bool) -> None:
    if not dry_run and not (reason and reason.strip()):
        raise UsageError("a mass revocation needs --reason TEXT (it is kept in the audit trail)")


@click.group(cls=_Group)
def token() -> None:
    """Issue, find, list, rotate, revoke and prune tokens in the token store."""


@token.command("issue")
@click.option(
    "--type",
    "tokenable_type",
    required=True,
    callback=_nonempty,
    help="Owner model, e.g. 'App\\Models\\User'.",
)
@click.option(
    "--id", "tokenable_id", required=True, help="Owner id (a whole number, UUID or ULID)."
)
@click.option("--name", required=True, callback=_nonempty, help="Token name.")
@click.option(
    "--ability",
    "abilities",
    multiple=True,
    callback=_nonempty,
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
    issued = _store(cli).issue(
        tokenable_type,
        tokenable_id,
        name,
        abilities or ("*",),
        expires_at,
        audit=AuditContext.cli(reason),
    )
    emit(as_json, issued.to_json(), issued.plain_text_token)


token_ref = [
    click.argument("token_id", type=int, required=False),
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

    secret = click.get_text_stream("stdin").read() if text == "-" else None
    try:
        info = _resolve(_store(cli), token_id, text, token_hash, secret)
    except NotFoundError as e:
        digest = hash_of(secret, token_hash)
        if digest is None or not cli.settings.regions:
            raise
        regions = regions_accepting(cli.settings, None, digest)
        if as_json:
            body = {"error": str(e), "code": "not_found", "exit_code": EXIT_FAILED}
            click.echo(json.dumps({**body, "regions": regions}))
        else:
            click.echo(f"tokensync: error: {e}", err=True)
            click.echo("  regions    " + ", ".join(f"{n}: {a}" for n, a in regions.items()))
        raise click.exceptions.Exit(EXIT_FAILED) from None
    regions = regions_accepting(cli.settings, info)
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
    store = _store(cli)
    info = _resolve(store, token_id, text, token_hash)
    mutation = store.revoke_token(info.id, audit=AuditContext.cli(reason))
    _report(
        cli,
        store,
        f"token {info.id} ({info.tokenable_type}:{info.tokenable_id}) revoked",
        mutation,
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
@reason_option
@json_option
@pass_cli
def rotate(
    cli: CliContext, *, token_id: int, grace: str, reason: str | None, as_json: bool
) -> None:
    """Issue a replacement token; the old one is revoked now or after --grace."""
    issued = _store(cli).rotate(
        token_id, int(parse_duration(grace)), audit=AuditContext.cli(reason)
    )
    emit(as_json, issued.to_json(), issued.plain_text_token)


@token.command("prune")
@click.option(
    "--hours",
    type=click.IntRange(min=0),
    default=24,
    show_default=True,
    help="Delete tokens that expired at least this many hours ago.",
)
@reason_option
@json_option
@pass_cli
def prune(cli: CliContext, *, hours: int, reason: str | None, as_json: bool) -> None:
    """Delete expired tokens (Sanctum's sanctum:prune-expired)."""
    mutation = _store(cli).prune_expired(hours, audit=AuditContext.cli(reason))
    emit(as_json, mutation.to_json(), f"pruned {mutation.removed} expired token(s)")


@click.group(cls=_Group)
def revoke() -> None:
    """Mass revocation: one epoch event per scope, whatever the number of tokens."""


@revoke.command("principal")
@click.option("--type", "tokenable_type", required=True, callback=_nonempty)
@click.option("--id", "tokenable_id", required=True, help="A whole number, UUID or ULID.")
@reason_option
@dry_run_option
@wait_option
@json_option
@pass_cli
def revoke_principal(
    cli: CliContext,
    *,
    tokenable_type: str,
    tokenable_id: str,
    reason: str | None,
    dry_run: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Revoke every token of one principal issued until now."""
    from producer.dryrun import count_principal

    store = _store(cli)
    if dry_run:
        count = count_principal(store, tokenable_type, tokenable_id)
        emit(as_json, count.to_json(), count.lines())
        return
    _require_reason(reason, dry_run)
    mutation = store.revoke_principal(tokenable_type, tokenable_id, audit=AuditContext.cli(reason))
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
@click.option(
    "--include-wildcard",
    is_flag=True,
    help="Also revoke the live tokens holding '*' (one per-token revocation each).",
)
@reason_option
@dry_run_option
@wait_option
@json_option
@pass_cli
def revoke_ability(
    cli: CliContext,
    *,
    ability: str,
    include_wildcard: bool,
    reason: str | None,
    dry_run: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Revoke every token whose abilities list ABILITY literally (and, with
    --include-wildcard, every live token holding '*')."""
    from producer.dryrun import count_ability

    store = _store(cli)
    count = count_ability(store, ability)
    if dry_run:
        emit(as_json, count.to_json(), count.lines())
        return
    _require_reason(reason, dry_run)
    mutation = store.revoke_ability(
        ability, include_wildcard=include_wildcard, audit=AuditContext.cli(reason)
    )
    if include_wildcard:
        extra = [f"{mutation.per_token} token(s) holding '*' revoked one by one"]
        still = 0
    else:
        still = count.wildcard_total
        extra = [
            f"{still} live token(s) hold '*' and therefore still carry {ability!r}"
            + (" (revoke them too with --include-wildcard)" if still else "")
        ]
    _report(
        cli,
        store,
        f"tokens with ability {ability!r} revoked",
        mutation,
        wait=wait,
        as_json=as_json,
        extra=extra,
        data_extra={"wildcard_still_live": still, "wildcard_by_type": count.wildcard_by_type},
    )


@revoke.command("all")
@click.option("--before", required=True, help="'now', ISO 8601, or Unix seconds (not later).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (required off a terminal).")
@reason_option
@dry_run_option
@wait_option
@json_option
@pass_cli
def revoke_all(
    cli: CliContext,
    *,
    before: str,
    yes: bool,
    reason: str | None,
    dry_run: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Revoke every token issued before a time (never a future one)."""
    from producer.dryrun import count_all

    store = _store(cli)
    instant = parse_instant(before)
    count = count_all(store, instant)  # refuses a future --before before asking anything
    if dry_run:
        emit(as_json, count.to_json(), count.lines())
        return
    _require_reason(reason, dry_run)
    if not yes:
        if as_json or not sys.stdin.isatty():
            raise UsageError(
                "revoke all cannot be undone: pass --yes (required with --json or off a terminal)"
            )
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(count.by_type.items())) or "none stored"
        click.echo(
            f"This revokes EVERY token issued before {before} in every region, for good: "
            f"{count.total} stored token(s) ({kinds}), admin tokens included."
        )
        if not click.confirm("Revoke them all?", default=False):
            _fail(False, "not confirmed: nothing was revoked", "declined", EXIT_FAILED)
    mutation = store.revoke_all(instant, audit=AuditContext.cli(reason))
    _report(
        cli, store, f"tokens issued before {before} revoked", mutation, wait=wait, as_json=as_json
    )


@click.command(cls=_Command)
@click.option("--since", default=None, help="Only records this recent: 90s/15m/1h/7d, or a time.")
@click.option(
    "--actor",
    default=None,
    help="An actor (user@host, 'token:12 (...)'), or a kind: cli, api, python, sql.",
)
@click.option("--action", default=None, help="Only this action, e.g. revoke.all.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@json_option
@pass_cli
def audit(
    cli: CliContext,
    *,
    since: str | None,
    actor: str | None,
    action: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The audit trail: who did what to the token store, when, why, with which seq."""
    from producer.audit import parse_since, read

    since_ms = parse_since(since) if since else None
    store = _store(cli)
    entries = read(store.engine, since_ms=since_ms, actor=actor, action=action, limit=limit)
    lines = [
        f"{_when(e.at_ms)}  {e.actor:<28} {e.action:<17} {e.scope or '-':<32} "
        f"seq {e.seq or '-'}"
        + (f"  removed {e.removed}" if e.removed else "")
        + (f"  reason: {e.reason}" if e.reason else "")
        + (f"  receipt: {e.receipt.get('summary', 'attached')}" if e.receipt else "")
        for e in entries
    ]
    emit(as_json, [e.to_json() for e in entries], lines or "no audit records")


def _when(at_ms: int) -> str:
    return dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
