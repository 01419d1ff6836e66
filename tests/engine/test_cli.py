"""``python -m wav2lip``: the command line, with the official script's option spellings."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import imageio_ffmpeg
import pytest

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def short_wav(tmp_path_factory, data_dir) -> Path:
    """The first 1.2 s of the speech fixture (30 frames at 25 fps, 15 at the ultra_fast 12 fps)."""
    with wave.open(str(data_dir / "speech_9s.wav")) as src:
        params, pcm = src.getparams(), src.readframes(19_200)
    path = tmp_path_factory.mktemp("cli-audio") / "short.wav"
    with wave.open(str(path), "wb") as dst:
        dst.setparams(params)
        dst.writeframes(pcm)
    return path


def cli(cwd: Path, *args) -> subprocess.CompletedProcess:
    """Run the CLI in ``cwd`` (an empty folder: no ``checkpoints/`` to find)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "wav2lip", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=150)  # fmt: skip


def test_defaults_use_the_fallback(tmp_path, short_wav):
    proc = cli(tmp_path, "--audio", short_wav, "--out", "out.mp4", "--quiet", "--preset", "ultra_fast")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out.mp4"
    assert out.is_file()
    assert "renderer fallback" in proc.stdout
    assert "15 frames at 12 fps" in proc.stdout
    assert imageio_ffmpeg.count_frames_and_secs(str(out))[0] == 15
    assert "frames" not in proc.stderr  # --quiet: no progress bar


def test_official_option_spellings(tmp_path, short_wav, random_checkpoint):
    proc = cli(tmp_path, "--audio", short_wav, "--outfile", "result_voice.mp4", "--checkpoint_path", random_checkpoint,
               "--resize_factor", "4", "--wav2lip_batch_size", "8", "--quiet", "--selection-dir", tmp_path / "sel")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "result_voice.mp4"
    assert out.is_file()
    assert "renderer wav2lip" in proc.stdout
    assert "30 frames at 25 fps" in proc.stdout
    assert imageio_ffmpeg.count_frames_and_secs(str(out))[0] == 30
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(out)], capture_output=True, text=True)
    assert "128x128" in probe.stderr  # the official resize_factor: output at the reduced size
    # auto with a given batch size: the modes were measured at that size, and the summary says so.
    assert "precision " in proc.stdout and "batch 8 [measured: fastest mode above the accuracy floor" in proc.stdout
    assert list((tmp_path / "sel").glob("*.json"))


def test_explicit_precision_is_reported(tmp_path, short_wav, random_checkpoint):
    proc = cli(tmp_path, "--audio", short_wav, "--out", "fp32.mp4", "--checkpoint", random_checkpoint, "--resize_factor",
               "4", "--precision", "fp32", "--batch-size", "16", "--quiet", "--selection-dir", tmp_path / "sel")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "(cpu, fp32)" in proc.stdout and "precision fp32, batch 16 [explicit" in proc.stdout
    assert not (tmp_path / "sel").exists()  # nothing measured, nothing kept


def test_progress_bar_without_quiet(tmp_path, short_wav):
    proc = cli(tmp_path, "--audio", short_wav, "--out", "bar.mp4", "--preset", "ultra_fast")
    assert proc.returncode == 0, proc.stderr
    assert "15/15 frames" in proc.stderr


def test_lossless_writes_mkv(tmp_path, short_wav):
    proc = cli(tmp_path, "--audio", short_wav, "--out", "exact.mp4", "--lossless", "--quiet", "--resize_factor", "4")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "exact.mkv").is_file()
    assert not (tmp_path / "exact.mp4").exists()
    assert "exact.mkv" in proc.stdout


def test_missing_checkpoint(tmp_path, short_wav):
    missing = tmp_path / "nowhere" / "wav2lip_gan.pth"
    proc = cli(tmp_path, "--audio", short_wav, "--out", "out.mp4", "--checkpoint_path", missing, "--quiet")
    assert proc.returncode == 2
    assert str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_bad_audio(tmp_path):
    bad = tmp_path / "speech.wav"
    bad.write_text("this is not a wav file\n")
    proc = cli(tmp_path, "--audio", bad, "--out", "out.mp4", "--quiet", "--preset", "ultra_fast")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.wav"]


def test_int8_refusal_exits_with_the_reason(tmp_path, short_wav, random_checkpoint):
    """int8 on the random weights is far from fp32 (~32 dB here): the CLI refuses, writes nothing."""
    pytest.importorskip("onnx")
    proc = cli(tmp_path, "--audio", short_wav, "--out", "int8.mp4", "--checkpoint", random_checkpoint, "--resize_factor",
               "4", "--precision", "int8", "--quiet")  # fmt: skip
    assert proc.returncode == 2
    assert "error: precision int8 refused" in proc.stderr and "below the 35 dB floor" in proc.stderr
    assert "Traceback" not in proc.stderr and "WARNING" not in proc.stderr
    assert not (tmp_path / "int8.mp4").exists()
