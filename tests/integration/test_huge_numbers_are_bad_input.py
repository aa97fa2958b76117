"""Huge numbers are bad input (CLI one line, HTTP 422)."""

from __future__ import annotations

import httpx
import pytest

from producer.store import TokenStore
from tests.cli_helpers import run_cli

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
ADMIN = "tokensync"
HUGE = "99999999999999999999"

CLI_CASES = {
    "revoke all --before, Unix seconds past year 9999": [
        "revoke", "all", "--before", "99999999999999", "--yes", "--reason", "x", "--json"],
    "token issue --expires-in past year 9999": [
        "token", "issue", "--type", USER, "--id", "1", "--name", "n",
        "--expires-in", "99999999999d"],
    "token rotate --grace past year 9999": ["token", "rotate", "{id}", "--grace", "99999999999d"],
    "revoke principal, an id past BIGINT": [
        "revoke", "principal", "--type", USER, "--id", HUGE, "--reason", "x"],
    "token revoke, an id past BIGINT": ["token", "revoke", HUGE],
    "token find, an id past BIGINT": ["token", "find", HUGE, "--json"],
    "token rotate, an id past BIGINT": ["token", "rotate", HUGE],
    "token prune --hours before year 1": ["token", "prune", "--hours", "99999999999"],
    "audit --since, Unix seconds past year 9999": ["audit", "--since", "99999999999999"],
    "audit --since, a look-back before year 1": ["audit", "--since", "99999999999d"],
}  # fmt: skip


@pytest.mark.parametrize("args", CLI_CASES.values(), ids=CLI_CASES.keys())
def test_a_huge_number_on_the_command_line_is_one_line_and_exit_2(
    store: TokenStore,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
) -> None:
    token = store.issue(USER, 1, "n")
    argv = [a.replace("{id}", str(token.id)) for a in args]
    try:
        run = run_cli(monkeypatch, capsys, database_url, *argv)
    except Exception as e:  # the finding is that it escapes
        pytest.fail(f"traceback: {type(e).__name__}: {e}")
    assert 2 == run.code, (run.out, run.err)


HTTP_CASES = {
    "revoke all before year 3170843": (
        "POST", "/v1/revocations/all", {"before": "99999999999999", "reason": "x"}),
    "issue expiring after year 9999": (
        "POST", "/v1/tokens",
        {"tokenable_type": USER, "tokenable_id": 1, "name": "n", "expires_in": "99999999999d"}),
    "rotate with a grace past year 9999": (
        "POST", "/v1/tokens/{id}/rotate", {"grace": "99999999999d"}),
    "revoke a token id past BIGINT": ("DELETE", f"/v1/tokens/{HUGE}", None),
    "look up a token id past BIGINT": ("POST", "/v1/tokens/lookup", {"id": int(HUGE)}),
    "revoke a principal id past BIGINT": (
        "POST", "/v1/revocations/principal",
        {"tokenable_type": USER, "tokenable_id": int(HUGE), "reason": "x"}),
    "rotate a token id past BIGINT": ("POST", f"/v1/tokens/{HUGE}/rotate", {}),
    "a receipt of a seq past BIGINT": ("GET", f"/v1/receipts/{HUGE}", None),
    "prune tokens expired before year 1": ("POST", "/v1/tokens/prune?hours=99999999999", None),
    "audit since Unix seconds past year 9999": ("GET", "/v1/audit?since=99999999999999", None),
    "audit since a look-back before year 1": ("GET", "/v1/audit?since=99999999999d", None),
    "list a principal id past BIGINT": ("GET", f"/v1/principals/{USER}/{HUGE}/tokens", None),
}  # fmt: skip


@pytest.mark.parametrize("case", HTTP_CASES.values(), ids=HTTP_CASES.keys())
def test_a_huge_number_on_the_admin_api_is_a_422(
    client: httpx.Client, store: TokenStore, case: tuple[str, str, dict[str, object] | None]
) -> None:
    method, path, body = case
    root = store.issue(ADMIN, 0, "root", ["*"]).plain_text_token
    victim = store.issue(USER, 1, "victim")
    response = client.request(
        method,
        path.replace("{id}", str(victim.id)),
        json=body,
        headers={"Authorization": f"Bearer {root}"},
    )
    assert response.status_code in {404, 422}, (response.status_code, response.text[:200])
