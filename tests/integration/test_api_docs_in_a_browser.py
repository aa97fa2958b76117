"""The admin API's ``/docs`` and ``/redoc`` in a real browser (headless Chromium) with every
host but the API unreachable: the pages render from the installed package alone, show how
to authenticate and each route's required ability. Screenshots are kept as artefacts."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from producer.api import create_app
from producer.schema import create_engine, migrate
from producer.store import TokenStore
from shared.settings import Settings
from tests.http_helpers import serving

pytestmark = pytest.mark.integration

#: Where the screenshots go: under the checkout's ``.tokensync`` (kept by CI, ignored by git).
ARTEFACTS = Path(__file__).resolve().parents[2] / ".tokensync" / "artefacts"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "headless Chromium is needed for the API docs test: "
        "run scripts/prerequisites.sh test (sudo apt-get install chromium)"
    )


def _browse(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Chromium, headless, able to reach 127.0.0.1 only (any other host does not resolve)."""
    return subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--user-data-dir={profile}",
            "--window-size=1280,2400",
            "--virtual-time-budget=15000",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def api_url(sqlite_url: str) -> Iterator[str]:
    engine = create_engine(sqlite_url)
    migrate(engine)
    with serving(create_app(Settings(), TokenStore(engine))) as url:
        yield url
    engine.dispose()


def _render(url: str, page: str, tmp_path: Path) -> str:
    """The page's DOM after its scripts ran; a screenshot of it kept under ARTEFACTS."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTEFACTS / f"api{page.replace('/', '-')}.png"
    shot.unlink(missing_ok=True)
    dom = _browse(f"{url}{page}", tmp_path / "profile-dom", "--dump-dom")
    taken = _browse(f"{url}{page}", tmp_path / "profile-shot", f"--screenshot={shot}")
    print(f"screenshot of {page}: {shot}")
    assert 0 == dom.returncode, dom.stderr[-2000:]
    assert 0 == taken.returncode, taken.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 0
    return dom.stdout


def test_the_docs_page_renders_every_operation_and_the_authorize_button_offline(
    api_url: str, tmp_path: Path
) -> None:
    dom = _render(api_url, "/docs", tmp_path)
    operations = httpx.get(f"{api_url}/openapi.json").json()["paths"]
    expected = sum(len(methods) for methods in operations.values())
    assert expected == dom.count('class="opblock opblock-'), dom[:2000]
    assert "authorize" in dom
    assert "/v1/revocations/all" in dom
    # how to authenticate, on the page itself; each route's ability shown without a click
    assert "Authorization: Bearer &lt;token&gt;" in dom or "Authorization: Bearer <token>" in dom
    shown = re.findall(r'class="opblock-summary-description"[^>]*>([^<]*)<', dom)
    secured = sum(
        len(methods) for path, methods in operations.items() if path not in {"/healthz", "/metrics"}
    )
    needs = [s for s in shown if "needs " in s]
    assert secured == len(needs), shown
    assert "Revoke All (needs revocations:mass)" in shown, shown
    html = httpx.get(f"{api_url}/docs").text
    assert "://" not in html, "the page must not load anything from another host"
    assert all(u.startswith("/docs-static/") for u in re.findall(r'(?:src|href)="([^"]+)"', html))


def test_the_redoc_page_renders_each_routes_required_ability_offline(
    api_url: str, tmp_path: Path
) -> None:
    dom = _render(api_url, "/redoc", tmp_path)
    assert "Revoke every token issued before a time" in dom, dom[:2000]
    assert "Required ability: <code>revocations:mass</code>" in dom
    assert "Required ability: <code>tokens:issue</code>" in dom
    assert "bearer" in dom.lower()
    html = httpx.get(f"{api_url}/redoc").text
    assert "://" not in html, "the page must not load anything from another host"
    assert all(u.startswith("/docs-static/") for u in re.findall(r'(?:src|href)="([^"]+)"', html))


def test_the_openapi_names_the_bearer_scheme_and_each_routes_ability(api_url: str) -> None:
    schema = httpx.get(f"{api_url}/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert {
        "adminToken": {
            "type": "http",
            "scheme": "bearer",
            "description": schemes["adminToken"]["description"],
        }
    } == schemes
    open_routes = {"/healthz", "/metrics"}
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if path in open_routes:
                assert "security" not in operation, (method, path)
                continue
            assert [{"adminToken": []}] == operation["security"], (method, path)
            assert "Required ability:" in operation["description"], (method, path)
    receipts = schema["paths"]["/v1/receipts/{seq}"]["get"]["description"]
    assert "`tokens:read` or `tokens:revoke` or `revocations:mass`" in receipts
