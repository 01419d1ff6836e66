"""Text-to-video benchmark: speech synthesis speed, pipelined time to first chunk, presets.

    python -m bench tts [--quick]          (CPU; needs Ray and Piper)

* Piper real-time factor on this CPU (synthesis seconds / speech seconds), 60 s text;
* a ~30 s answer through the service (random official-format checkpoint, so the real
  model's cost): time to the first finished chunk (sentence pipelining) and total;
* a ~9 s answer end to end at the ``ultra_fast`` and ``quality`` presets, next to the
  old system's published figure (6-8 s for a 9 s answer on a GPU at 12 fps, 1/4 resolution).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from .common import service_suite_args, machine_info, print_table, write_result
from .serve import local_service, random_checkpoint_dir

TEXT_60S = Path(__file__).parent / "texts" / "long_answer.txt"  #: the 60 s fixture's text
TEXT_9S = ("Hello, and welcome to the studio. Today I will show you how a single photograph can be turned into "
           "a talking video, with lips that move in perfect time with every spoken word.")  # fmt: skip
OLD_SYSTEM_9S = "6-8 s (GPU, 12 fps, 1/4 resolution)"


def run(quick: bool = False) -> dict:
    import httpx

    from wav2lip.hparams import SAMPLE_RATE
    from wav2lip.tts import SpeechSynthesizer

    text_long = TEXT_60S.read_text().strip()
    sentences = [s for s in text_long.replace("\n", " ").split(". ") if s]
    text_30s = ". ".join(sentences[: max(1, len(sentences) // 2)]) + "."
    results: dict = {}

    synth = SpeechSynthesizer()
    synth.synthesize("Warm up.")
    t = time.perf_counter()
    samples = synth.synthesize(text_long)
    took = time.perf_counter() - t
    results["piper"] = {"speech_s": len(samples) / SAMPLE_RATE, "synthesis_s": took,
                        "rtf": took / (len(samples) / SAMPLE_RATE), "threads": 1}  # fmt: skip

    tmp = Path(tempfile.mkdtemp(prefix="w2l-bench-tts-"))
    with local_service(checkpoint_dir=random_checkpoint_dir(tmp), data_dir=tmp / "data") as (base, _):
        with httpx.Client(timeout=900) as client:
            def ask(message: str, **extra) -> tuple[dict, float]:
                body = {"message": message, "agent_type": "general", "enable_parallel": True, "chunk_duration": 3,
                        "use_ultra_fast": False, **extra}  # fmt: skip
                t0 = time.perf_counter()
                r = client.post(f"{base}/generate_video", json=body)
                r.raise_for_status()
                return r.json(), time.perf_counter() - t0

            ask("Warm up the model and the avatar.")
            answer, wall = ask(text_30s)
            st = answer["stats"]
            results["answer_30s"] = {"duration_s": answer["duration_s"], "wall_s": wall,
                                     "first_chunk_s": st["stages"].get("first_chunk"),
                                     "tts_s": st["audio_generation_time"], "chunks": st["total_chunks"]}  # fmt: skip
            for i, preset in enumerate(("ultra_fast",) if quick else ("ultra_fast", "quality")):
                t0 = time.perf_counter()  # distinct text per preset (a trailing space): no cache hit
                r = client.post(f"{base}/v1/videos", data={"text": TEXT_9S + " " * i, "preset": preset})
                r.raise_for_status()
                body = r.json()
                results[f"answer_9s_{preset}"] = {"duration_s": body["duration_s"], "wall_s": time.perf_counter() - t0,
                                                  "first_chunk_s": body["stats"]["stages"].get("first_chunk")}  # fmt: skip
    results["old_system_9s"] = OLD_SYSTEM_9S
    return results


def main(argv: list[str] | None = None) -> int:
    args = service_suite_args("tts", argv)
    results = run(args.quick)
    p = results["piper"]
    print_table("Piper on this CPU", ["speech s", "synthesis s", "RTF"], [[p["speech_s"], p["synthesis_s"], p["rtf"]]])
    a = results["answer_30s"]
    print_table("30 s answer via POST /generate_video", ["video s", "first chunk s", "total s", "TTS s", "chunks"],
                [[a["duration_s"], a["first_chunk_s"], a["wall_s"], a["tts_s"], a["chunks"]]])  # fmt: skip
    rows = [[k.removeprefix("answer_9s_"), v["duration_s"], v["wall_s"], v["first_chunk_s"]]
            for k, v in results.items() if k.startswith("answer_9s_")]  # fmt: skip
    print_table(f"9 s answer end to end (old system: {OLD_SYSTEM_9S})", ["preset", "video s", "total s", "first chunk s"],
                rows)  # fmt: skip
    print(f"\nwrote {write_result('tts', args.device, results, machine_info('cpu'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
