"""The live-session section of docs/benchmarks.md (from ``bench session``'s result file)."""

from __future__ import annotations

from .common import format_table, source_line


def session_section(data: dict) -> list[str]:
    r = data["results"]
    lat, drift = r["latency"], r["drift"]
    return [f"## Live sessions ({r['renderer']} renderer, `{r['preset']}` preset, one worker)",
            "Latency: from the first byte of an utterance's PCM sent on the socket to the arrival of the first "
            "fragment that holds it (2 s utterances into an idle session; `burst`: all at once then "
            "`end_of_speech`, as a TTS sends; `real_time`: 100 ms pieces every 100 ms).",
            format_table("Speech latency", ["input", "median ms", "p95 ms", "runs"],
                         [[k, v["median_ms"], v["p95_ms"], len(v["runs"])] for k, v in lat.items()]),
            format_table("Sessions speaking at once (real-time PCM at the preset's frame rate): lateness, batching, CPU",
                         ["sessions", "behind events", "fragment gap median ms", "fragment gap p95 ms",
                          "frames per model call", "sessions per model call", "SessionHost cores", "worker cores"],
                         [[c["sessions"], c["behind_events"], c["fragment_gap_ms_median"], c["fragment_gap_ms_p95"],
                           c["frames_per_model_call"], c["calls_per_model_call"], c.get("host_cores"),
                           c.get("worker_cores")] for c in r["capacity"]]),
            f"A/V offset (decoded audio against the speech sent, samples at 16 kHz) over a {drift['seconds']:.0f} s "
            f"session speaking on and off: {drift['first']['offset_samples']} at {drift['first']['pts']:.1f} s, "
            f"{drift['last']['offset_samples']} at {drift['last']['pts']:.1f} s ({drift['measured']} utterances measured).",
            source_line(data)]  # fmt: skip
