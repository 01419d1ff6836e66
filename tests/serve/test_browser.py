"""The demo page in a real browser: Debian's Chromium driven by Playwright.

It plays the stream (Media Source Extensions fed from live.mp4) while the render is
still running, reaches the end, and reports no error; and its Live mode opens a session,
plays the idle avatar, speaks, is interrupted and closes. CI installs both; elsewhere the
test skips when either is missing, and says which.
"""

from __future__ import annotations

import os
import shutil
import time

import httpx
import pytest

from serve_app.settings import RenderSettings, Settings

from .conftest import deploy

pytestmark = pytest.mark.timeout(300)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TEXT = ("Hello! I am your virtual assistant. I can answer questions about your order, "
        "your account and our opening hours. How can I help you today?")  # fmt: skip


def _browser():
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright Python package")
        sync_playwright = None
    if CHROMIUM is None:
        missing.append("Debian's chromium")
    if missing:
        reason = f"browser test needs {' and '.join(missing)} (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return sync_playwright


def _launch(p):
    """Debian's Chromium, headless, allowed to autoplay."""
    return p.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"],
    )  # fmt: skip


def test_demo_page_plays_the_stream_while_it_renders(ray_cluster, tmp_path):
    sync_playwright = _browser()
    url = ray_cluster
    deploy(Settings(workers=2, worker_gpus=0.5, worker_cpus=0.5, data_dir=tmp_path, render=RenderSettings(threads=1),
                    stream_chunk_duration_s=1.28, inject_chunk_delay_s=1.0, job_poll_s=0.1))  # fmt: skip
    with sync_playwright() as p:
        browser = _launch(p)
        page = browser.new_page()
        failed = []
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('agent').options.length > 0", timeout=30_000)
        page.fill("#text", TEXT)
        page.click("#go")
        page.wait_for_function("window.demo.stream !== null || window.demo.error !== null", timeout=60_000)
        stream = page.evaluate("window.demo.stream")
        assert stream is not None, page.evaluate("window.demo.error")

        playing_while_rendering = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            current = page.evaluate("document.getElementById('video').currentTime")
            state = httpx.get(url + stream["status"], timeout=30).json()
            if current > 0 and state["status"] == "rendering":
                playing_while_rendering = True
                break
            assert page.evaluate("window.demo.error") is None
            if state["status"] not in ("starting", "rendering"):
                break
            time.sleep(0.05)
        assert playing_while_rendering, f"the video only started after the render: {state}"

        page.wait_for_function("document.getElementById('video').ended", timeout=120_000)
        assert page.evaluate("window.demo.error") is None
        assert page.evaluate("document.getElementById('video').error") is None
        page.wait_for_function("window.demo.state === 'done'", timeout=60_000)
        duration = page.evaluate("document.getElementById('video').duration")
        final = httpx.get(url + stream["status"], timeout=30).json()
        assert abs(duration - final["duration_s"]) < 0.1, (duration, final["duration_s"])
        assert page.evaluate("window.demo.firstFrameMs") > 0
        page.screenshot(path=str(tmp_path / "demo.png"))
        browser.close()
    assert not [f for f in failed if not f.endswith("/favicon.ico")], failed


LONG_TEXT = ("Thank you for calling, I am going to read you the whole list of our opening hours for every one of our "
             "shops in the city centre and in the suburbs, starting with the largest one near the main station. "
             "On Mondays it opens at eight in the morning and closes at eight in the evening. "
             "On Tuesdays and Wednesdays it opens at nine and closes at seven, and on Thursdays it stays open until ten.")  # fmt: skip


def _advances(page, by: float = 0.5, timeout_ms: int = 30_000) -> None:
    """The live <video>'s currentTime moves on by ``by`` seconds (it plays, it is not stalled)."""
    start = page.evaluate("document.getElementById('live').currentTime")
    page.wait_for_function(f"document.getElementById('live').currentTime > {start + by} || window.live.error !== null",
                           timeout=timeout_ms)  # fmt: skip
    assert page.evaluate("window.live.error") is None


@pytest.fixture(scope="module")
def live_service(ray_cluster, tmp_path_factory):
    deploy(Settings(workers=1, worker_cpus=0.5, data_dir=tmp_path_factory.mktemp("live"), render=RenderSettings(threads=1)))
    return ray_cluster


def _open_live(browser, url: str, transport: str):
    """A page on the demo, its Live mode open and idling; (page, failed responses, console errors)."""
    page = browser.new_page()
    failed, console_errors = [], []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    page.goto(f"{url}/?live={transport}")
    page.wait_for_function("document.getElementById('agent').options.length > 0", timeout=30_000)
    page.click("#liveOpen")
    page.wait_for_function("window.live.state === 'idle' || window.live.error !== null", timeout=60_000)
    live = page.evaluate("window.live")
    assert live["error"] is None and live["transport"] == transport and live["fallback"] is None, live
    page.wait_for_function("document.getElementById('live').currentTime > 0 || window.live.error !== null",
                           timeout=30_000)  # fmt: skip
    _advances(page)  # the idle avatar plays
    return page, failed, console_errors


def _close_live(page, failed, console_errors, url: str) -> None:
    session_id = page.evaluate("window.live.sessionId")
    page.click("#liveClose")
    page.wait_for_function("window.live.state === 'closed'", timeout=30_000)
    live = page.evaluate("window.live")
    assert live["state"] == "closed" and live["error"] is None, live
    print("live events:", live["events"])
    assert httpx.get(f"{url}/v1/sessions/{session_id}", timeout=30).status_code == 404
    assert not [f for f in failed if not f.endswith("/favicon.ico")], failed
    assert not console_errors, console_errors


def test_live_mode_speaks_and_interrupts_over_mse(live_service, tmp_path):
    sync_playwright = _browser()
    url = live_service
    with sync_playwright() as p:
        browser = _launch(p)
        page, failed, console_errors = _open_live(browser, url, "mse")
        assert page.evaluate("document.getElementById('live').muted")

        page.fill("#text", LONG_TEXT)
        page.click("#liveSpeak")
        page.wait_for_function("(window.live.events.includes('speech_started') && typeof window.live.latencyMs === 'number')"
                               " || window.live.error !== null", timeout=90_000)  # fmt: skip
        live = page.evaluate("window.live")
        assert live["error"] is None, live
        print(f"\nlive: Speak click -> first speaking frame shown: {live['latencyMs']:.0f} ms")
        assert live["latencyMs"] > 0
        _advances(page)  # it plays on while speaking
        assert page.evaluate("window.live.state") == "speaking", page.evaluate("window.live")

        page.click("#liveInterrupt")
        page.wait_for_function("window.live.events.includes('interrupted') || window.live.error !== null", timeout=30_000)
        page.wait_for_function("typeof window.live.marginMs === 'number'", timeout=30_000)  # from the stats events
        print(f"live: real-time margin {page.evaluate('window.live.marginMs'):.0f} ms per fragment")
        page.wait_for_function("window.live.state === 'idle' || window.live.error !== null", timeout=30_000)
        assert page.evaluate("window.live.error") is None
        _advances(page)  # back to idling, still playing
        assert page.evaluate("document.getElementById('live').error") is None
        page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
        _close_live(page, failed, console_errors, url)
        browser.close()


_INBOUND = """async () => {
  const out = {};
  for (const r of (await window.livePeer().getStats()).values())
    if (r.type === "inbound-rtp") out[r.kind] = r;
  return out;
}"""


def _inbound(page) -> dict:
    return page.evaluate(_INBOUND)


def test_live_mode_over_webrtc_two_viewers(live_service, tmp_path):
    """The page's video over WebRTC: frames decoded and audio received (getStats), a typed sentence
    spoken, a second browser context on the same session, each peer connection closed cleanly."""
    sync_playwright = _browser()
    url = live_service
    with sync_playwright() as p:
        browser = _launch(p)
        page, failed, console_errors = _open_live(browser, url, "webrtc")
        page.wait_for_function("window.livePeer().connectionState === 'connected'", timeout=30_000)
        before = _inbound(page)
        assert before["video"]["codecId"] and before["video"]["framesDecoded"] > 0, before
        assert before["video"]["frameWidth"] > 0 and before["audio"]["packetsReceived"] > 0, before
        codec = page.evaluate("async (id) => (await window.livePeer().getStats()).get(id).mimeType", before["video"]["codecId"])
        assert codec == "video/H264", codec  # the session's own H.264, not a per-peer encode
        session_id = page.evaluate("window.live.sessionId")

        page.fill("#text", TEXT)
        page.click("#liveSpeak")
        page.wait_for_function("window.live.events.includes('speech_ended') || window.live.error !== null", timeout=90_000)
        live = page.evaluate("window.live")
        assert live["error"] is None and "speech_started" in live["events"], live
        assert live["latencyMs"] > 0, live  # the speech was heard in the page (WebAudio on the received track)
        print(f"\nlive (WebRTC): Speak click -> speech heard in the page: {live['latencyMs']:.0f} ms")
        after = _inbound(page)
        assert after["video"]["framesDecoded"] > before["video"]["framesDecoded"] + 25, (before, after)
        assert after["audio"]["totalSamplesReceived"] > before["audio"]["totalSamplesReceived"], (before, after)
        assert after["audio"]["packetsLost"] == 0, after  # on loopback: every Opus packet arrives
        page.screenshot(path=str(tmp_path / "live-webrtc.png"), full_page=True)

        # A second browser context watches the same session over WebRTC, then leaves.
        other = browser.new_context().new_page()
        other.goto(f"{url}/")
        other.wait_for_function("window.livePeer !== undefined", timeout=30_000)
        stats = other.evaluate("""async (status) => {
          const pc = new RTCPeerConnection();
          pc.addTransceiver("video", { direction: "recvonly" });
          pc.addTransceiver("audio", { direction: "recvonly" });
          const video = document.getElementById("live");
          const stream = new MediaStream();
          pc.ontrack = (e) => { stream.addTrack(e.track); video.srcObject = stream; };
          await pc.setLocalDescription(await pc.createOffer());
          await new Promise((r) => { pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r(); setTimeout(r, 3000); });
          const r = await fetch(status + "/webrtc", { method: "POST", headers: { "Content-Type": "application/json" },
                                                     body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }) });
          await pc.setRemoteDescription(await r.json());
          for (let i = 0; i < 200; i++) {
            const s = [...(await pc.getStats()).values()].find((x) => x.type === "inbound-rtp" && x.kind === "video");
            if (s && s.framesDecoded > 10) { pc.close(); return s.framesDecoded; }
            await new Promise((r) => setTimeout(r, 100));
          }
          pc.close();
          return 0;
        }""", f"/v1/sessions/{session_id}")  # fmt: skip
        assert stats > 10
        other.context.close()
        # the first viewer lives on after the second left
        more = _inbound(page)["video"]["framesDecoded"]
        page.wait_for_function(f"window.livePeer().getStats().then(s => [...s.values()].some("
                               f"r => r.type === 'inbound-rtp' && r.kind === 'video' && r.framesDecoded > {more + 10}))",
                               timeout=30_000)  # fmt: skip
        _close_live(page, failed, console_errors, url)
        assert page.evaluate("window.livePeer() === null || window.livePeer().connectionState === 'closed'")
        browser.close()
