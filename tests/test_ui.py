"""`stt-flywheel ui`: the pages over a store with served, corrected and held traffic (in-process,
through Starlette's test client), the guards on what changes something or reaches a file, and a
walk in a real browser over a finished run (Chromium driven by selenium), at a desktop's and a
phone's width."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from conftest import free_port, serve_through_v1
from starlette.testclient import TestClient

from stt_flywheel.config import FlywheelConfig, load_config
from stt_flywheel.data.decode import decode_audio
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.data.manifest import Utterance
from stt_flywheel.deployment.backends import open_registry
from stt_flywheel.ui.app import create_app


@pytest.fixture
def corrected(
    flywheel_config: tuple[Path, FlywheelConfig], new_utts: list[Utterance]
) -> tuple[FlywheelConfig, list[dict], list[Utterance]]:
    """v1 serves 8 new-domain requests; each is corrected (one of them wildly, so it is held)."""
    _, config = flywheel_config
    utts = new_utts[:8]
    answers = serve_through_v1(config, utts)
    now = datetime.now(UTC).isoformat()
    events = [
        {"prediction_id": a["prediction_id"], "corrected_text": u.text, "event_time": now, "source": "app"}
        for a, u in zip(answers, utts, strict=True)
    ]
    events[0]["corrected_text"] = "an entirely different sentence about nothing in particular at all"
    result = open_error_store(config).ingest_feedback(events)
    assert result.states["applied"] == len(events)
    return config, answers, utts


def test_the_pages_answer_and_link(corrected: tuple[FlywheelConfig, list[dict], list[Utterance]]) -> None:
    config, answers, utts = corrected
    client = TestClient(create_app(config, allowed_hosts=["testserver"]))
    home = client.get("/")
    assert home.status_code == 200 and "v1</a> serves 100 % as the default" in home.text
    assert "Next trigger check: would" in home.text and "corrections held for review" in home.text
    assert "default-src 'none'" in home.headers["content-security-policy"] and "<script" not in home.text
    for path in ("/versions", "/versions/1", "/runs", "/canaries", "/live", "/live?hours=6", "/review"):
        page = client.get(path)
        assert page.status_code == 200, (path, page.text[-500:])
        assert page.text.startswith("<!doctype html>") and "<script" not in page.text
    pid = answers[1]["prediction_id"]
    page = client.get(f"/utterances/{pid}")
    assert page.status_code == 200
    assert f"src='/audio/{pid}'" in page.text and utts[1].text in page.text
    assert answers[1]["transcript"] in page.text and "href='/versions/1'" in page.text
    audio = client.get(f"/audio/{pid}")
    assert audio.status_code == 200 and audio.headers["content-type"].startswith("audio/")
    assert decode_audio(audio.content).duration_s > 0  # the bytes served are the utterance's audio
    assert client.get("/utterances/no-such-prediction").status_code == 404
    assert client.get("/versions/99").status_code == 404
    assert client.get("/runs/no-such-run").status_code == 404
    assert client.get("/live?hours=abc").status_code == 400
    assert client.get("/live?since=2026-01-02&until=2026-01-01").status_code == 400


def test_a_review_decision_needs_this_servers_page_and_is_audited(
    corrected: tuple[FlywheelConfig, list[dict], list[Utterance]],
) -> None:
    config, answers, _ = corrected
    client = TestClient(create_app(config, allowed_hosts=["testserver"]))
    held = answers[0]["prediction_id"]
    assert f"/utterances/{held}" in client.get("/review").text
    form = {"decision": "reject", "reason": "not what was said"}
    for origin in (None, "http://elsewhere.example"):
        headers = {"origin": origin} if origin else {}
        refused = client.post(f"/review/{held}", data=form, headers=headers, follow_redirects=False)
        assert refused.status_code == 403  # a form posted from another site, or by no page at all
    assert not [e for e in open_registry(config).audit_log() if e.action == "review"]
    done = client.post(
        f"/review/{held}", data=form, headers={"origin": "http://testserver"}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"].startswith("/review?done=")
    [entry] = [e for e in open_registry(config).audit_log() if e.action == "review"]
    assert entry.detail["decision"] == "rejected" and entry.detail["reason"] == "not what was said"
    assert f"/utterances/{held}" not in client.get("/review").text
    again = client.post(f"/review/{held}", data=form, headers={"origin": "http://testserver"})
    assert again.status_code == 400 and "no held correction" in again.text  # said, not a traceback
    empty = client.post(
        f"/review/{answers[1]['prediction_id']}",
        data={"decision": "accept", "reason": " "},
        headers={"origin": "http://testserver"},
    )
    assert empty.status_code == 400
    huge = client.post(
        f"/review/{answers[1]['prediction_id']}",
        data={"decision": "accept", "reason": "x" * 50_000},
        headers={"origin": "http://testserver"},
    )
    assert huge.status_code == 413


def test_only_files_under_the_reports_are_served_and_only_to_known_hosts(
    corrected: tuple[FlywheelConfig, list[dict], list[Utterance]],
) -> None:
    config, _, _ = corrected
    reports = Path(str(config.paths.reports))
    (reports / "monitor").mkdir(parents=True)
    (reports / "monitor" / "look.html").write_text("<!doctype html><p>a look</p>")
    (reports / "run-1").mkdir()
    (reports / "run-1" / "deploy.md").write_text("# Deploy\n\n<script>alert(1)</script> | a | b |\n")
    client = TestClient(create_app(config, allowed_hosts=["testserver"]))
    page = client.get("/reports/monitor/look.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    md = client.get("/reports/run-1/deploy.md")
    assert md.status_code == 200 and "<h1>Deploy</h1>" in md.text and "<script>alert" not in md.text
    for path in ("/reports/../flywheel.yaml", "/reports/..%2Fflywheel.yaml", "/reports/monitor/../../x"):
        assert client.get(path).status_code == 404, path
    assert client.get("/", headers={"host": "attacker.example"}).status_code == 400  # DNS rebinding


def test_behind_iap_only_a_verified_assertion_gets_in(
    corrected: tuple[FlywheelConfig, list[dict], list[Utterance]],
) -> None:
    from fakes.google_tokens import TokenIssuer, serving_certs

    config, answers, _ = corrected
    issuer = TokenIssuer()
    audience = "/projects/123/locations/europe-west4/services/stt-flywheel-ui"
    with serving_certs(issuer) as certs_url:
        iap = config.model_copy(
            update={"ui": config.ui.model_copy(update={"iap_audience": audience, "iap_certs_url": certs_url})}
        )
        client = TestClient(create_app(iap))
        assert client.get("/").status_code == 401
        assert client.get("/healthz").status_code == 200
        good = issuer.mint("reviewer@example.com", audience, issuer="https://cloud.google.com/iap")
        wrong_issuer = issuer.mint("reviewer@example.com", audience)
        wrong_audience = issuer.mint(
            "reviewer@example.com", "/projects/999/x", issuer="https://cloud.google.com/iap"
        )
        for token in (wrong_issuer, wrong_audience, good[:-4] + "AAAA"):
            assert client.get("/", headers={"x-goog-iap-jwt-assertion": token}).status_code == 401
        headers = {"x-goog-iap-jwt-assertion": good, "origin": "http://testserver"}
        assert client.get("/", headers=headers).status_code == 200
        held = answers[0]["prediction_id"]
        client.post(f"/review/{held}", data={"decision": "reject", "reason": "r"}, headers=headers)
    [entry] = [e for e in open_registry(config).audit_log() if e.action == "review"]
    assert entry.detail["by"] == "reviewer@example.com"


def test_ui_refuses_to_listen_beyond_loopback_without_iap(
    flywheel_config: tuple[Path, FlywheelConfig], cli
) -> None:
    path, _ = flywheel_config
    code, _, err = cli("ui", "--config", str(path), "--host", "0.0.0.0")
    assert code == 1 and "Identity-Aware Proxy" in err


def _wait_up(url: str, process: subprocess.Popen) -> None:
    for _ in range(300):
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("the ui did not start")


def _browser(width: int):  # type: ignore[no-untyped-def]
    from selenium import webdriver

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, (
        "chromium and chromium-driver are required: `make test` installs them through apt"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    if width < 1280:  # a window is never narrower than 500 px: a phone's viewport is emulated
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": width, "height": 844}})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def _no_sideways_scroll(browser, name: str, width: int) -> None:  # type: ignore[no-untyped-def]
    wide, inner = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert inner == width, f"{name}: laid out {inner} px wide, not {width}"  # the viewport tag is honoured
    assert wide <= inner, f"{name}: {wide} px of page in a {inner} px window"


@pytest.mark.slow
@pytest.mark.chromium
def test_a_person_walks_from_the_headline_to_an_utterance_and_back_in_chromium(
    poisoned_demo: tuple[Path, dict, str], tmp_path: Path
) -> None:
    """Headline → the run → its validation → an utterance (its audio loads and has a duration) →
    the version that answered it; every page at 1280 and 390 px without sideways scrolling."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    home, summary, _ = poisoned_demo
    config_path = home / "poisoned-feedback" / "flywheel.yaml"
    run_id = summary["turns"][0]["run_id"]
    audited = len(open_registry(load_config(config_path)).audit_log())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SE_OFFLINE": "true"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flywheel_pipelines.cli",
            "ui",
            "--config",
            str(config_path),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    os.environ["SE_OFFLINE"] = "true"  # selenium never looks for a driver online
    try:
        _wait_up(url, server)
        visited: list[str] = []
        browser = _browser(1280)
        try:
            browser.get(url + "/")
            assert "as the default" in browser.find_element(By.CSS_SELECTOR, "p.headline").text
            browser.save_screenshot(str(tmp_path / "1-now.png"))
            browser.find_element(By.LINK_TEXT, run_id).click()
            assert run_id in browser.find_element(By.TAG_NAME, "h1").text
            visited.append(browser.current_url)
            browser.find_element(By.PARTIAL_LINK_TEXT, "Validation, utterance by utterance").click()
            assert "Validation of run" in browser.find_element(By.TAG_NAME, "h1").text
            visited.append(browser.current_url)
            browser.save_screenshot(str(tmp_path / "2-validation.png"))
            browser.find_element(By.CSS_SELECTOR, "a[href^='/utterances/']").click()
            assert "Utterance" in browser.find_element(By.TAG_NAME, "h1").text
            visited.append(browser.current_url)
            duration = WebDriverWait(browser, 30).until(
                lambda b: b.execute_script(
                    "const a = document.querySelector('audio'); return a.readyState >= 1 && a.duration;"
                )
            )
            assert duration > 0.2
            browser.save_screenshot(str(tmp_path / "3-utterance.png"))
            browser.find_element(By.CSS_SELECTOR, "a[href^='/versions/']").click()
            assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Version ")
            visited.append(browser.current_url)
            for path in ("/", "/runs", "/canaries", "/live", "/review"):
                visited.append(url + path)
            for page in visited:
                browser.get(page)
                _no_sideways_scroll(browser, page, 1280)
        finally:
            browser.quit()
        phone = _browser(390)
        try:
            for n, page in enumerate(visited):
                phone.get(page)
                _no_sideways_scroll(phone, page, 390)
                phone.save_screenshot(str(tmp_path / f"phone-{n}.png"))
        finally:
            phone.quit()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert len(open_registry(load_config(config_path)).audit_log()) == audited  # the walk changed nothing
