"""Progressive-delivery benchmark: time to the first frame against time to the whole file.

    python -m bench stream [--quick]        (CPU; needs Ray, so not for the GPU machine)

Same service as ``bench serve`` (random official-format checkpoint: the real model's
cost; default avatar, full resolution, default settings), the 9 s fixture, warm, with
distinct audio per run (no cache hits). For each run:

* ``POST /v1/streams`` answered (ms);
* first fragment on the wire: the first bytes of ``live.mp4``, from the POST's start;
* first frame in the browser: Chromium (Playwright) playing ``live.mp4`` through the demo
  page's own MSE player, from the page's POST to its ``playing`` event (skipped, and
  said so, where Chromium or Playwright is missing);
* the same request again (the finished stream is shared): its first ``live.mp4`` bytes;
* the whole stream (status complete) and, for comparison, ``POST /v1/videos`` (the
  whole file in one response);
* a text answer of about the same length (TTS inside the stream): first fragment on
  the wire, and first frame through the demo page's own flow (type, click, play).
"""

from __future__ import annotations

import base64
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

from .common import service_suite_args, machine_info, print_table, write_result
from .serve import AUDIO, _variant, local_service, random_checkpoint_dir

#: About 8 s of speech, like the audio fixture: the demo page's default kind of answer.
TEXT = ("Hello! I am your virtual assistant. I can answer questions about your order, "
        "your account and our opening hours. How can I help you today?")  # fmt: skip

_BROWSER_POST = """async (audio) => {
  const bytes = Uint8Array.from(atob(audio), (c) => c.charCodeAt(0));
  const form = new FormData();
  form.append("audio", new Blob([bytes], { type: "audio/wav" }), "a.wav");
  const start = performance.now();
  const info = await api("/v1/streams", { method: "POST", body: form });
  demo.firstFrameMs = null; demo.state = "streaming";
  playLive(info, start);
  while (demo.firstFrameMs === null && !demo.error) await new Promise((r) => setTimeout(r, 5));
  return { first_frame_ms: demo.firstFrameMs, error: demo.error, status: info.status };
}"""


def _wire(client, base: str, body: bytes | None = None, text: str | None = None) -> dict:
    t = time.perf_counter()
    if text is not None:
        r = client.post(f"{base}/v1/streams", data={"text": text})
    else:
        r = client.post(f"{base}/v1/streams", files={"audio": ("a.wav", body, "audio/wav")})
    r.raise_for_status()
    info = r.json()
    out = {"post_ms": (time.perf_counter() - t) * 1000}
    with client.stream("GET", base + info["mp4"]) as live:
        for piece in live.iter_bytes():
            if "first_fragment_s" not in out:
                out["first_fragment_s"] = time.perf_counter() - t
    out["whole_stream_s"] = time.perf_counter() - t
    status = client.get(base + info["status"]).json()
    assert status["status"] == "complete", status
    out["fragments"] = status["fragments_total"]
    return out


def _browser(base: str, bodies: list[bytes], texts: list[str], client) -> dict | str:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "playwright is not installed"
    chromium = shutil.which("chromium")
    if chromium is None:
        return "chromium is not installed"
    firsts, text_firsts = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"])  # fmt: skip
        page = browser.new_page()
        page.goto(base + "/")
        for body in bodies:
            got = page.evaluate(_BROWSER_POST, base64.b64encode(body).decode())
            assert got["error"] is None, got
            firsts.append(got["first_frame_ms"] / 1000)
            while client.get(base + got["status"]).json()["status"] in ("starting", "rendering"):
                time.sleep(0.1)  # one stream at a time
        for text in texts:  # the demo page's own flow: type, click, watch
            page.fill("#text", text)
            page.click("#go")
            page.wait_for_function("window.demo.state === 'done' || window.demo.error !== null", timeout=300_000)
            assert page.evaluate("window.demo.error") is None, page.evaluate("window.demo.error")
            text_firsts.append(page.evaluate("window.demo.firstFrameMs") / 1000)
        browser.close()
    return {"audio": firsts, "text": text_firsts}


def run(quick: bool = False) -> dict:
    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="w2l-bench-"))
    ckpt = random_checkpoint_dir(tmp)
    samples, _ = sf.read(AUDIO, dtype="float32")
    repeats = 2 if quick else 3
    results: dict = {"audio_s": len(samples) / 16000}
    with local_service(checkpoint_dir=ckpt, data_dir=tmp / "data") as (base, settings):
        with httpx.Client(timeout=600) as client:
            _wire(client, base, _variant(samples, 500))  # warm: model, avatar, caches
            wire = [_wire(client, base, _variant(samples, 501 + i)) for i in range(repeats)]
            replay = [_wire(client, base, _variant(samples, 501 + i)) for i in range(repeats)]  # identical again
            whole = []
            for i in range(repeats):
                t = time.perf_counter()
                r = client.post(f"{base}/v1/videos", files={"audio": ("a.wav", _variant(samples, 601 + i), "audio/wav")})
                r.raise_for_status()
                whole.append(time.perf_counter() - t)
            texts = [f"{TEXT} This is answer number {i + 1}." for i in range(repeats)]
            _wire(client, base, text="Warming up the voice.")
            text_wire = [_wire(client, base, text=f"{t} Over the wire.") for t in texts]
            browser = _browser(base, [_variant(samples, 701 + i) for i in range(repeats)], texts, client)
        results["settings"] = {"first_chunk_frames": settings.stream_first_chunk_frames,
                               "chunk_duration_s": settings.stream_chunk_duration_s, "window": settings.stream_window,
                               "workers": settings.workers}  # fmt: skip
    med = statistics.median
    results["post_ms"] = med(w["post_ms"] for w in wire)
    results["first_fragment_s"] = med(w["first_fragment_s"] for w in wire)
    results["whole_stream_s"] = med(w["whole_stream_s"] for w in wire)
    results["fragments"] = wire[0]["fragments"]
    results["replay_first_byte_ms"] = med(1000 * w["first_fragment_s"] for w in replay)
    results["whole_file_s"] = med(whole)
    results["text"] = {"first_fragment_s": med(w["first_fragment_s"] for w in text_wire),
                       "whole_stream_s": med(w["whole_stream_s"] for w in text_wire), "fragments": text_wire[0]["fragments"]}  # fmt: skip
    if isinstance(browser, str):
        results["browser_first_frame_s"], results["browser_skipped"] = None, browser
        results["text"]["browser_first_frame_s"] = None
    else:
        results["browser_first_frame_s"] = med(browser["audio"])
        results["text"]["browser_first_frame_s"] = med(browser["text"])
    results["runs"] = {"wire": wire, "replay": replay, "text_wire": text_wire, "whole_file_s": whole, "browser_first_frame_s": browser}
    return results


def main(argv: list[str] | None = None) -> int:
    args = service_suite_args("stream", argv)
    r = run(args.quick)
    print_table("9 s answer, warm: progressive vs whole file (seconds, medians)",
                ["POST answered (ms)", "first fragment on the wire", "first frame in Chromium", "whole stream",
                 "whole file (/v1/videos)", "fragments", "identical request again: first byte (ms)"],
                [[r["post_ms"], r["first_fragment_s"], r["browser_first_frame_s"] or r.get("browser_skipped"),
                  r["whole_stream_s"], r["whole_file_s"], r["fragments"], r["replay_first_byte_ms"]]])  # fmt: skip
    t = r["text"]
    print_table("Text answer (TTS in the stream, sentence-pipelined), warm (seconds, medians)",
                ["first fragment on the wire", "first frame in Chromium (demo page)", "whole stream", "fragments"],
                [[t["first_fragment_s"], t["browser_first_frame_s"], t["whole_stream_s"], t["fragments"]]])  # fmt: skip
    path = write_result("stream", args.device, r, machine_info("cpu"))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
