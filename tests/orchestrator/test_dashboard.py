"""The compliance dashboard: its data behind the read token only, its page under a strict
Content-Security-Policy, and, in a real headless Chromium, a login, a request filed over
``/forget`` appearing and moving to purged, and a reason holding a script that runs
nothing.

The browser tests need Debian's ``chromium`` (``apt-get install chromium``) and the
``playwright`` package (in ``.[test]``); ``.ci/run`` installs the browser, so CI always
runs them. Elsewhere they are skipped with that message. ``SISA_DASHBOARD_SCREENSHOT=path``
saves the screenshot there too (docs/dashboard.png was made so).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import requests

from sisa.config import ServingConfig
from sisa.deletion.batch import process
from sisa.store.artifacts import SisaStore
from tests.orchestrator.local_app import InProcessBackend, serving
from tests.sisa.deletion.test_batch import pick

FORGET, READ = "f" * 8 + "forget-token", "r" * 8 + "read-token-x"
SCRIPTED = (  # no digit: a reason may not name an ID of the store
    "<img src=x onerror=\"window.__ran='img'\"><script>window.__ran='tag'</script>&amp; \"q\""
)


@pytest.fixture
def server(url):
    import hashlib

    from orchestrator.api import build_app

    settings = ServingConfig(token=FORGET, read_token=READ)
    digest = hashlib.sha256(FORGET.encode()).digest()
    read = hashlib.sha256(READ.encode()).digest()
    app = build_app(InProcessBackend(url), settings, digest, read_sha256=read)
    with serving(app) as address:
        yield address


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def file_request(base: str, url: str, reason: str = "erasure by email") -> str:
    ids = pick(url, 1, 1)
    answer = requests.post(
        f"{base}/forget", json={"ids": ids, "reason": reason}, headers=bearer(FORGET), timeout=30
    )
    assert answer.status_code == 202, answer.text
    return answer.json()["request_id"]


def test_the_data_needs_the_read_token_and_never_the_forget_token(server, url):
    request_id = file_request(server, url, SCRIPTED)
    data = f"{server}/dashboard/data"
    assert requests.get(data, timeout=30).status_code == 401
    assert requests.get(data, headers=bearer("x" * 20), timeout=30).status_code == 401
    refused = requests.get(data, headers=bearer(FORGET), timeout=30)
    assert refused.status_code == 401 and "serving.read_token" in refused.json()["detail"]
    answer = requests.get(data, headers=bearer(READ), timeout=30)
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    (row,) = body["requests"]
    assert row["id"] == request_id and row["state"] == "compliant" and row["reason"] == SCRIPTED
    assert row["time_left_s"] > 0 and row["deadline_at"] > row["accepted_at"]
    assert body["rolled_back"] and body["rolled_back"][0]["pending"] == [1]
    # no raw ID anywhere in what the page gets: only request IDs and salted hashes
    deleted = [str(i) for i in pick(url, 1, 1)]
    text = answer.text
    assert not any(f'"{i}"' in text or f"[{i}" in text or f" {i}," in text for i in deleted)


def test_the_page_is_served_by_the_app_under_a_strict_policy(server):
    page = requests.get(f"{server}/dashboard", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy and "http" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    html = page.text
    assert "<script>" not in html and "http://" not in html and "https://" not in html
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        asset = requests.get(f"{server}/dashboard/{name}", timeout=30)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert "innerHTML" not in asset.text and "http://" not in asset.text.replace(
            "http://www.w3.org/2000/svg", ""
        )


def test_without_a_read_token_the_dashboard_is_off(url):
    from orchestrator.api import build_app

    app = build_app(InProcessBackend(url), ServingConfig(), None)
    with serving(app) as base:
        off = requests.get(f"{base}/dashboard/data", headers=bearer(READ), timeout=30)
    assert off.status_code == 403 and "serving.read_token" in off.json()["detail"]


def test_the_read_token_must_differ_from_the_forget_token():
    with pytest.raises(ValueError, match="read_token must differ from token"):
        ServingConfig(token=FORGET, read_token=FORGET)
    with pytest.raises(ValueError, match="at least 16 characters"):
        ServingConfig(read_token="short")


# -- in a real browser ---------------------------------------------------------------------

CHROMIUM = os.environ.get("SISA_CHROMIUM") or shutil.which("chromium")
HOW = (
    "the dashboard's browser tests need Debian's chromium (apt-get install chromium, as "
    "root; or SISA_CHROMIUM=/path/to/chromium) and playwright (pip install -e '.[test]')"
)
FLAGS = [  # a closed network: no background connections, no sandbox as root
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip(HOW)
    sync = pytest.importorskip("playwright.sync_api", reason=HOW)
    with sync.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def state_of(page, request_id: str) -> str | None:
    row = page.locator(f'tr[data-request="{request_id}"] .state')
    return row.text_content() if row.count() else None


def wait_for(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"waited for {what}"
        time.sleep(0.2)
    return found


@pytest.mark.slow  # a browser
def test_a_request_filed_over_http_appears_and_moves_to_purged(server, url, browser, tmp_path):
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(str(err)))
    page.goto(f"{server}/dashboard")
    assert page.locator("#board").is_hidden()
    page.fill("#token", FORGET)  # the token that can forget is refused by the page too
    page.click("#login button")
    wait_for(lambda: page.locator("#login-error").text_content(), "the refusal")
    assert "serving.read_token" in page.locator("#login-error").text_content()
    page.fill("#token", READ)
    page.click("#login button")
    page.wait_for_selector("#board", state="visible")
    assert page.locator("#login").is_hidden()
    assert READ not in page.url and "token" not in page.url  # never in the URL

    request_id = file_request(server, url, SCRIPTED)
    page.reload()  # memory only: a reload forgets the token and asks again
    assert page.locator("#board").is_hidden()
    page.fill("#token", READ)
    page.click("#login button")
    assert wait_for(lambda: state_of(page, request_id), "the request") == "compliant"
    reason = page.locator(f'tr[data-request="{request_id}"] td.reason')
    assert reason.text_content() == SCRIPTED  # shown as text
    assert page.locator("#requests img, #requests script").count() == 0
    assert page.evaluate("window.__ran") is None  # and nothing in it ran
    assert page.locator("#rolled").text_content() == "1"

    process(url)
    wait_for(lambda: state_of(page, request_id) == "purged", "purged", timeout=30)
    receipt = page.locator(f'tr[data-request="{request_id}"] details summary').text_content()
    from sisa.deletion import receipts

    assert receipt == receipts.digest(receipts.read(SisaStore(url), 1))[:16]
    wait_for(lambda: page.locator("#plot rect.bar").count() == 1, "the day's bar")
    row = page.locator(f'tr[data-request="{request_id}"] td.num').nth(1).text_content()
    assert row.startswith("met, ") and row.endswith(" early")  # purged within the deadline
    assert page.locator("#rolled").text_content() == "0"
    assert page.evaluate("window.__ran") is None and problems == []
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if target := os.environ.get("SISA_DASHBOARD_SCREENSHOT"):
        Path(target).write_bytes(shot.read_bytes())
