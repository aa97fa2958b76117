"""``tokensync demo``: the end-to-end story on the local stack, with measured latencies.

Issues tokens, validates them in every region, then revokes one token, one
principal and everything, and measures, with validators polling in each
region, how long each revocation took to be enforced there (from the commit in
the store to the first denial). Exits non-zero if any step misbehaves.

Over 350 lines: one story told step by step (issue, validate, three kinds of
revocation, each measured in every region); splitting it would scatter the narrative.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from producer.receipts import wait_for_receipt
from producer.records import IssuedToken
from producer.store import TokenStore
from shared.errors import TokenSyncError
from shared.keys import RedisKeys
from shared.settings import Settings
from shared.validator import Outcome, Policy, Validator

__all__ = ["DemoReport", "run_demo"]

USER = "App\\Models\\User"


class DemoError(TokenSyncError):
    """Raised when a step of the demo does not behave as promised."""


@dataclass
class Step:
    """One line of the demo's table."""

    name: str
    detail: str
    per_region_ms: dict[str, float] = field(default_factory=dict)
    note: str = ""
    ok: bool = True

    def line(self, regions: Sequence[str]) -> str:
        """The step as a table row (and its note on a second line)."""
        width = max(8, *(len(r) for r in regions))
        cells = " ".join(
            f"{(f'{self.per_region_ms[r]:.1f} ms' if r in self.per_region_ms else '-'):>{width}}"
            for r in regions
        )
        row = f"{self.name:<10} {self.detail:<36} {cells}  {'ok' if self.ok else 'FAILED'}"
        return row + (f"\n{'':<11}{self.note}" if self.note else "")


@dataclass
class DemoReport:
    """Everything the demo measured."""

    regions: list[str]
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every step behaved."""
        return all(s.ok for s in self.steps)

    def header(self) -> str:
        """The table's heading."""
        width = max(8, *(len(r) for r in self.regions))
        return f"{'step':<10} {'what':<36} " + " ".join(f"{r:>{width}}" for r in self.regions)

    def lines(self) -> list[str]:
        """The table people read."""
        out = [self.header(), "-" * len(self.header())]
        out += [s.line(self.regions) for s in self.steps]
        out.append("")
        out.append("all steps behaved" if self.ok else "SOME STEPS FAILED")
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "ok": self.ok,
            "regions": self.regions,
            "steps": [
                {
                    "name": s.name,
                    "detail": s.detail,
                    "per_region_ms": s.per_region_ms,
                    "note": s.note,
                    "ok": s.ok,
                }
                for s in self.steps
            ],
        }


def _until(
    validator: Validator, token: str, want: Callable[[Outcome], bool], timeout_s: float
) -> float | None:
    """Poll until ``want(outcome)``; the perf_counter time it first held, or None."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        outcome = validator.validate(token).outcome
        if want(outcome):
            return time.perf_counter()
    return None


def _race(
    validators: dict[str, Validator],
    token: str,
    want: Callable[[Outcome], bool],
    act: Callable[[], Any],
    timeout_s: float = 10.0,
) -> tuple[Any, dict[str, float | None]]:
    """Start a poller per region, run ``act`` (a store commit), and time each region's change
    from the moment the commit returned."""
    results: dict[str, float | None] = {}
    go = threading.Event()

    def poll(name: str, validator: Validator) -> None:
        go.wait()
        results[name] = _until(validator, token, want, timeout_s)

    threads = [
        threading.Thread(target=poll, args=(n, v), daemon=True) for n, v in validators.items()
    ]
    for thread in threads:
        thread.start()
    value = act()
    committed = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join(timeout_s + 1)
    return value, {
        n: None if t is None else max(0.0, (t - committed) * 1000) for n, t in results.items()
    }


def run_demo(settings: Settings, store: TokenStore, echo: Callable[[str], None]) -> DemoReport:
    """Run the story against the regions in ``settings``; never raises for a misbehaving step."""
    if not settings.regions:
        raise DemoError("no regions configured: run `tokensync stack up` first")
    keys = RedisKeys(settings.redis_namespace)
    validators = {
        r.name: Validator.from_url(r.redis_url, keys=keys, policy=Policy.from_settings(settings))
        for r in settings.regions
    }
    report = DemoReport([r.name for r in settings.regions])
    try:
        _wait_for_regions(validators, echo)
        echo("")
        echo(report.header())
        echo("-" * len(report.header()))
        _Story(settings, store, validators, report, echo).run()
    finally:
        for v in validators.values():
            v.close()
    return report


def _wait_for_regions(validators: dict[str, Validator], echo: Callable[[str], None]) -> None:
    deadline = time.monotonic() + 90
    probe = "0" * 40  # a well-formed legacy-shaped token nobody holds
    pending = set(validators)
    echo(f"waiting for regions {', '.join(sorted(pending))} to be ready and fresh ...")
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            if validators[name].validate(probe).outcome is Outcome.INVALID:
                pending.discard(name)
        time.sleep(0.2)
    if pending:
        raise DemoError(
            f"regions not ready after 90 s: {', '.join(sorted(pending))} "
            "(is the stack up? `tokensync stack status`, `tokensync region status`)"
        )


@dataclass
class _Story:
    """The demo's steps, sharing the store, the validators and the report."""

    settings: Settings
    store: TokenStore
    validators: dict[str, Validator]
    report: DemoReport
    echo: Callable[[str], None]
    tokens: dict[str, list[IssuedToken]] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=lambda: {"alice": 1001, "bob": 1002, "carol": 1003})

    def record(
        self, step: Step, timings: dict[str, float | None], receipt_seq: int | None = None
    ) -> None:
        step.per_region_ms = {n: t for n, t in timings.items() if t is not None}
        missing = [n for n, t in timings.items() if t is None]
        if missing:
            step.ok = False
            step.note = f"no change seen in {', '.join(missing)}"
        elif receipt_seq is not None:
            receipt = wait_for_receipt(self.settings, self.store, receipt_seq, timeout_s=5)
            step.note = "receipt: " + receipt.summary()
        self.report.steps.append(step)
        self.echo(step.line(self.report.regions))

    def until_valid_everywhere(self, token: IssuedToken, began: float) -> dict[str, float | None]:
        timings: dict[str, float | None] = {}
        for name, v in self.validators.items():
            done = _until(v, token.plain_text_token, _is_valid, 10)
            timings[name] = None if done is None else (done - began) * 1000
        return timings

    def expect(self, token: IssuedToken, want: Outcome, step: Step) -> None:
        wrong = [
            n
            for n, v in self.validators.items()
            if v.validate(token.plain_text_token).outcome is not want
        ]
        if wrong:
            step.ok = False
            step.note += f"; token {token.id} is not {want.value} in {', '.join(wrong)}"

    def issue(self) -> None:
        began = time.perf_counter()
        for who in ("alice", "alice", "bob", "bob", "carol"):
            abilities = ["orders:read", "orders:write"] if who == "alice" else ["orders:read"]
            issued = self.store.issue(USER, self.ids[who], f"{who}-laptop", abilities)
            self.tokens.setdefault(who, []).append(issued)
        step = Step("issue", "5 tokens for alice, bob, carol")
        step.note = "valid everywhere (time until the last issued token answered valid)"
        self.record(step, self.until_valid_everywhere(self.tokens["carol"][0], began))

    def validate(self) -> None:
        step = Step("validate", "1,000 calls per region (p50)")
        samples: dict[str, list[float]] = {}
        for name, v in self.validators.items():
            token = self.tokens["alice"][0].plain_text_token
            durations = []
            for _ in range(1000):
                t = time.perf_counter()
                v.validate(token, ["orders:read"])
                durations.append((time.perf_counter() - t) * 1000)
            samples[name] = sorted(durations)
            bob = self.tokens["bob"][0].plain_text_token
            if v.validate(bob, ["orders:write"]).outcome is not Outcome.FORBIDDEN:
                step.ok = False
                step.note = f"{name}: a token without orders:write was not forbidden; "
        step.per_region_ms = {n: statistics.median(d) for n, d in samples.items()}
        step.note += "p99 " + ", ".join(
            f"{n} {d[int(len(d) * 0.99) - 1]:.2f} ms" for n, d in samples.items()
        )
        step.note += "; a token lacking orders:write is 403 everywhere" if step.ok else ""
        self.report.steps.append(step)
        self.echo(step.line(self.report.regions))

    def gate(self) -> None:
        """One request through each region's gate (as nginx or Envoy would ask), then 100
        more on one keep-alive connection for the p50."""
        import httpx

        gates = {n: u for n, u in self.settings.gate_urls.items() if n in self.validators}
        if not gates:
            return
        step = Step("gate", "100 GET /auth via the gate (p50)")
        alice = self.tokens["alice"][0]
        bob = self.tokens["bob"][0].plain_text_token
        samples: dict[str, list[float]] = {}
        shown = ""
        for name, url in gates.items():
            auth = {"Authorization": f"Bearer {alice.plain_text_token}"}
            try:
                with httpx.Client(base_url=url, timeout=5) as client:
                    first = client.get("/auth?ability=orders:read", headers=auth)
                    durations = []
                    for _ in range(100):
                        t = time.perf_counter()
                        client.get("/auth?ability=orders:read", headers=auth)
                        durations.append((time.perf_counter() - t) * 1000)
                    lacking = client.get(
                        "/auth?ability=orders:write", headers={"Authorization": f"Bearer {bob}"}
                    ).status_code
            except httpx.HTTPError as e:
                step.ok = False
                step.note += f"{name}: gate at {url} unreachable ({type(e).__name__}); "
                continue
            samples[name] = durations
            who = first.headers.get("x-tokensync-principal-id")
            if (first.status_code, who, lacking) != (200, str(self.ids["alice"]), 403):
                step.ok = False
                step.note += f"{name}: {first.status_code} for alice, {lacking} for bob; "
            elif not shown:
                shown = (
                    f"curl -H 'Authorization: Bearer {alice.id}|…' {url}/auth?ability=orders:read"
                    f" -> 200, X-Tokensync-Principal-Id: {who}; lacking orders:write -> 403"
                )
        step.per_region_ms = {n: statistics.median(d) for n, d in samples.items()}
        step.note += shown
        self.report.steps.append(step)
        self.echo(step.line(self.report.regions))

    def revoke_token(self) -> None:
        target = self.tokens["alice"][0]
        mutation, timings = _race(
            self.validators,
            target.plain_text_token,
            _is_invalid,
            lambda: self.store.revoke_token(target.id),
        )
        step = Step("revoke", f"one token (alice #{target.id})")
        self.record(step, timings, mutation.seq)
        self.expect(self.tokens["alice"][1], Outcome.VALID, step)

    def revoke_principal(self) -> None:
        mutation, timings = _race(
            self.validators,
            self.tokens["bob"][1].plain_text_token,
            _is_invalid,
            lambda: self.store.revoke_principal(USER, self.ids["bob"]),
        )
        step = Step("revoke", "principal bob (one epoch)")
        self.record(step, timings, mutation.seq)
        self.expect(self.tokens["bob"][0], Outcome.INVALID, step)
        self.expect(self.tokens["carol"][0], Outcome.VALID, step)

    def revoke_all(self) -> None:
        mutation, timings = _race(
            self.validators,
            self.tokens["carol"][0].plain_text_token,
            _is_invalid,
            self.store.revoke_all,
        )
        step = Step("revoke", "everything before now (one epoch)")
        self.record(step, timings, mutation.seq)
        self.expect(self.tokens["alice"][1], Outcome.INVALID, step)
        began = time.perf_counter()
        fresh = self.store.issue(USER, self.ids["alice"], "alice-after-incident", ["orders:read"])
        self.record(
            Step("issue", "a new token after the mass revocation"),
            self.until_valid_everywhere(fresh, began),
        )

    def run(self) -> None:
        self.issue()
        self.validate()
        self.gate()
        self.revoke_token()
        self.revoke_principal()
        self.revoke_all()


def _is_valid(outcome: Outcome) -> bool:
    return outcome is Outcome.VALID


def _is_invalid(outcome: Outcome) -> bool:
    return outcome is Outcome.INVALID
