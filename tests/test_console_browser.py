"""The console in a real headless Chromium (Playwright): sign in, see a new AF alert appear live, open it on its ECG
strip, acknowledge and silence it and see the device's replies; a viewer is refused; no page without login; CSRF
token required; a wrong password refused.

The AF alert is real pipeline output: MITDB record 201 (when ../shared/data is present) or sample-signals/af,
replayed through ``edgemon.daemon.pipeline.Pipeline`` with the shipped models; the device answering commands runs
the very ``AlertEngine`` that raised it. ``EDGEMON_UPDATE_SCREENSHOT=1`` writes docs/img/console.png.
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from console_fixtures import *  # noqa: F401,F403
from console_fixtures import PASSWORD
from mqtt_fixtures import *  # noqa: F401,F403

pytestmark = pytest.mark.broker
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
expect = sync_api.expect

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("EDGEMON_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"chromium not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        except Exception as err:  # noqa: BLE001 - a broken browser install is a skip, with the reason
            pytest.skip(f"chromium at {CHROMIUM} does not start under Playwright: {str(err).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def af_alert():
    """(AlertPayload, AlertEngine, record): the first AF alert of a real replay, with its strip."""
    from edgemon.config import DeviceConfig
    from edgemon.daemon.pipeline import Pipeline, load_models
    from edgemon.evaluate.common import default_data_root
    from edgemon.sources.replay import iter_chunks, open_record

    root = default_data_root()
    record = root / "mitdb" / "201" if root is not None and (root / "mitdb" / "201.hea").exists() \
        else REPO_ROOT / "sample-signals" / "af"
    cfg = DeviceConfig()
    models = load_models(cfg)
    if models.rhythm is None and models.tachogram is None:
        pytest.skip(f"no AF model loaded: {models.errors}")
    rec = open_record(record, ["MLII"])
    t0 = time.time() - 90.0  # stream seconds = epoch seconds, as on a live device
    pipe = Pipeline(cfg, rec.fs_hz, channel_kind="ecg", channel="MLII", models=models, start_time_s=t0)
    for chunk in iter_chunks(rec, 1.0, start_time_s=t0):
        for ev in pipe.push_chunk(chunk, 0):
            if getattr(ev, "condition", None) == "af" and getattr(ev, "strip", None) is not None:
                return ev, pipe.engine, record.name
    pytest.fail(f"replaying {record} raised no AF alert with a strip")


def device_with_engine(env, make_transport, engine):
    from edgemon.transport.commands import engine_command_handler

    dev = make_transport(env.broker, device=engine.device_id, site=engine.site,
                         handler=engine_command_handler(engine, threading.Lock()))
    assert dev.wait_connected(5)
    return dev


def sign_in(page, url: str, user: str, password: str = PASSWORD) -> None:
    page.goto(url + "/")
    assert "/login" in page.url
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_clinician_sees_alert_live_opens_strip_acks_and_silences(console_env, make_transport, browser, af_alert,
                                                                 tmp_path):
    payload, engine, record = af_alert
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    try:
        sign_in(page, console_env.url, "dr-a", "not-the-password")
        assert page.locator("#login-error").inner_text() == "Wrong user name or password."
        sign_in(page, console_env.url, "dr-a")
        page.wait_for_selector("#inbox")
        expect(page.locator("#live-state")).to_have_text("live", timeout=5000)
        page.evaluate("window.__sameDocument = true")
        dev = device_with_engine(console_env, make_transport, engine)
        dev.send(payload)
        row = page.wait_for_selector(f'#inbox tr[data-alert-id="{payload.alert_id}"]', timeout=5000)
        assert page.evaluate("window.__sameDocument") is True  # appeared live, no reload
        label = {"high": "HIGH", "medium": "MED", "low": "LOW"}[payload.priority]
        assert "Atrial fibrillation" in row.inner_text() and label in row.inner_text()
        page.click(f'#inbox tr[data-alert-id="{payload.alert_id}"] a')
        page.wait_for_selector("svg.ecg-strip")
        n_beats = page.locator("svg.ecg-strip g.beat").count()
        assert n_beats >= 8 and page.locator("svg.ecg-strip polyline.trace").count() == 1
        box = page.locator("svg.ecg-strip").bounding_box()
        px_per_mm = 96 / 25.4  # CSS mm: the strip is drawn at 25 mm/s
        assert box["width"] == pytest.approx((10 + 25 * len(payload.strip.samples) / payload.strip.fs_hz + 5)
                                             * px_per_mm, rel=0.02)
        ev_text = page.locator("#evidence").inner_text()
        assert payload.evidence.source in ev_text and payload.evidence.model_version in ev_text
        assert "Firing" in page.locator("#lifecycle").inner_text()
        page.click("#ack-btn")
        page.wait_for_selector("#commands tr.cmd-ok", timeout=8000)
        assert page.locator("#commands tr.cmd-ok .reply").first.inner_text() == "device: ok"
        expect(page.locator("#alert-state")).to_contain_text("acknowledged", timeout=5000)
        page.select_option("#silence-duration", "900")
        page.fill("#silence-reason", "known paroxysmal AF")
        page.click("#silence-btn")
        expect(page.locator("#commands tr.cmd-ok")).to_have_count(2, timeout=8000)
        assert "silence 15 min" in page.locator("#commands tbody tr").first.inner_text()
        assert engine.silences() and engine.silences()[0].created_by == "dr-a"
        page.reload()
        assert "Acknowledged" in page.locator("#lifecycle").inner_text()
        assert "Silenced" in page.locator("#lifecycle").inner_text()
        shot = (REPO_ROOT / "docs" / "img" / "console.png") if os.environ.get("EDGEMON_UPDATE_SCREENSHOT") \
            else tmp_path / "console.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 20000
    finally:
        page.close()


def test_viewer_refused_csrf_required_no_page_without_login(console_env, make_transport, browser, af_alert):
    payload, engine, _ = af_alert
    dev = device_with_engine(console_env, make_transport, engine)
    dev.send(payload)
    assert dev.wait_idle(10)
    ctx = browser.new_context()
    page = ctx.new_page()
    try:
        for path in ("/", "/devices", f"/alerts/{payload.alert_id}", "/export"):
            page.goto(console_env.url + path)
            assert page.url.startswith(console_env.url + "/login"), path
        status = page.evaluate("async (u) => (await fetch(u)).status", console_env.url + "/api/inbox")
        assert status == 401
        sign_in(page, console_env.url, "nurse-v")
        page.wait_for_selector(f'#inbox tr[data-alert-id="{payload.alert_id}"]')
        page.goto(f"{console_env.url}/alerts/{payload.alert_id}")
        assert page.locator("#read-only").is_visible() and page.locator("#ack-btn").count() == 0
        refused = page.evaluate("""async (id) => {
            const csrf = document.querySelector('meta[name="csrf-token"]').content;
            const r = await fetch('/api/alerts/' + id + '/ack', {method: 'POST', headers: {
                'Content-Type': 'application/json', 'X-CSRF-Token': csrf}, body: '{}'});
            return [r.status, (await r.json()).error]; }""", payload.alert_id)
        assert refused[0] == 403 and "clinicians only" in refused[1]
        page.goto(console_env.url + "/devices")
        assert page.locator(f'#devices tr[data-device="{engine.site}/{engine.device_id}"] .presence').inner_text() \
            == "online"
        # a clinician's page without the CSRF token: refused, nothing sent to the device
        ctx2 = browser.new_context()
        page2 = ctx2.new_page()
        sign_in(page2, console_env.url, "dr-a")
        page2.wait_for_selector("#inbox")
        no_token = page2.evaluate("""async (id) => (await fetch('/api/alerts/' + id + '/ack', {method: 'POST',
            headers: {'Content-Type': 'application/json'}, body: '{}'})).status""", payload.alert_id)
        assert no_token == 403 and dev.stats["commands"] == 0
        ctx2.close()
    finally:
        ctx.close()
