"""``python -m bench [engine|serve|ingress|tts|scale|fractional|stream|session|webrtc|all] [--device cpu|cuda] [--quick]``: run benchmark suites."""

from __future__ import annotations

import argparse
import importlib
import sys

SUITES = ("engine", "serve", "ingress", "tts", "scale", "fractional", "stream", "session", "webrtc")
NOT_AVAILABLE = 2  #: exit status when a suite's module does not exist yet


def _load(suite: str):
    try:
        return importlib.import_module(f"bench.{suite}")
    except ModuleNotFoundError as exc:
        if exc.name != f"bench.{suite}":  # the suite exists but one of its imports is missing
            raise
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suite", nargs="?", choices=(*SUITES, "all"), default="engine")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--quick", action="store_true", help="a couple of configurations only")
    args, extra = parser.parse_known_args(argv)  # suite options (e.g. engine --modes-only) go to the suite
    forwarded = (["--device", args.device] if args.device else []) + (["--quick"] if args.quick else []) + extra
    status = 0
    for suite in SUITES if args.suite == "all" else (args.suite,):
        module = _load(suite)
        if module is None:
            print(f"bench {suite}: not yet available", file=sys.stderr)
            status = max(status, NOT_AVAILABLE)
            continue
        status = max(status, module.main(forwarded) or 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
