"""``python -m wav2lip``: the command line, compatible with the official script's options."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import Wav2LipError
from .ffmpeg import set_ffmpeg_binary
from .hparams import DEFAULT_PADS
from .options import (
    ACCURACY_FLOOR_DB, LOOP_MODES, PRECISIONS, PRESETS, SELECTION_BUDGET_S, SELECTION_DIR, AvatarOptions, RenderOptions,
    preset,
)  # fmt: skip

_BAR_WIDTH = 30


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wav2lip", description="Lip-sync a face image or video to speech.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--audio", help="speech file (wav, mp3, m4a, ogg, flac, ...)")
    src.add_argument("--text", help="text to speak (offline Piper TTS)")
    p.add_argument("--voice", default=None, help="TTS voice (see --list-voices)")
    p.add_argument("--out", "--outfile", dest="out", default="result.mp4", help="output video (default result.mp4)")
    p.add_argument("--face", default=None, help="face image or video (default: the shipped avatar)")
    p.add_argument("--checkpoint", "--checkpoint_path", dest="checkpoint", default=None,
                   help="official wav2lip.pth / wav2lip_gan.pth (default: checkpoints/, else the weights-free renderer)")
    p.add_argument("--box", nargs=4, type=int, metavar=("Y1", "Y2", "X1", "X2"), default=None,
                   help="fixed face box; no detection, pads or smoothing (official --box)")
    p.add_argument("--pads", nargs=4, type=int, metavar=("T", "B", "L", "R"), default=list(DEFAULT_PADS))
    p.add_argument("--nosmooth", action="store_true", help="disable the 5-frame face box smoothing")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: the video's, else the preset's)")
    p.add_argument("--resize-factor", "--resize_factor", dest="resize_factor", type=int, default=None)
    p.add_argument("--preset", choices=sorted(PRESETS), default="balanced")
    p.add_argument("--lossless", action="store_true", help="FFV1 in Matroska, frames kept exactly")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="fp32 is exact (the official layout); auto = the fastest mode above --accuracy-floor, measured "
                        "once per machine and model")
    p.add_argument("--batch-size", "--wav2lip_batch_size", dest="batch_size", type=int, default=0,
                   help="frames per model call (default: measured with the precision)")
    p.add_argument("--accuracy-floor", type=float, default=ACCURACY_FLOOR_DB,
                   help=f"dB PSNR against fp32 below which auto never picks a mode (default {ACCURACY_FLOOR_DB:g})")
    p.add_argument("--selection-dir", default=SELECTION_DIR, help=f"where measured verdicts are kept (default {SELECTION_DIR})")
    p.add_argument("--selection-budget", type=float, default=SELECTION_BUDGET_S,
                   help=f"seconds the measurement may take (default {SELECTION_BUDGET_S:g})")
    p.add_argument("--loop", choices=LOOP_MODES, default="pingpong", help="how a short video avatar repeats")
    p.add_argument("--checkpoint-dir", default="checkpoints", help="where to look when --checkpoint is not given")
    p.add_argument("--ffmpeg", default=None, help="ffmpeg binary to use (default: the one in imageio-ffmpeg)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _progress(quiet: bool):
    def show(done: int, total: int) -> None:
        filled = _BAR_WIDTH * done // max(total, 1)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done}/{total} frames")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return None if quiet else show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .pipeline import lip_sync, load_generator

    try:
        if args.ffmpeg:
            set_ffmpeg_binary(args.ffmpeg)
        enc = preset(args.preset, resize_factor=args.resize_factor, lossless=args.lossless or None)
        out = Path(args.out)
        if args.lossless and out.suffix.lower() != ".mkv":
            out = out.with_suffix(".mkv")
        audio = args.audio
        if args.text is not None:
            from .tts import DEFAULT_VOICE, SpeechSynthesizer

            audio = SpeechSynthesizer(args.voice or DEFAULT_VOICE).synthesize(args.text)
        avatar_opts = AvatarOptions(
            pads=tuple(args.pads), box=tuple(args.box) if args.box else None, smooth=not args.nosmooth,
            resize_factor=enc.resize_factor,
        )  # fmt: skip
        generator = load_generator(args.checkpoint, None if args.checkpoint else args.checkpoint_dir)
        result = lip_sync(
            audio, out, args.face, generator=generator,
            render=RenderOptions(device=args.device, precision=args.precision, batch_size=args.batch_size,
                                 accuracy_floor_db=args.accuracy_floor, selection_dir=args.selection_dir,
                                 selection_budget_s=args.selection_budget),
            enc=enc, avatar_options=avatar_opts, fps=args.fps, loop=args.loop, progress=_progress(args.quiet),
        )  # fmt: skip
    except Wav2LipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
