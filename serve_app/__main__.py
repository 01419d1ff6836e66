"""``python -m serve_app``: a local Ray sized to this machine, the app from serve_config.yaml."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

import yaml

CONFIG = Path(__file__).resolve().parent.parent / "serve_config.yaml"


def _app_config(path: Path) -> dict:
    apps = (yaml.safe_load(path.read_text()) or {}).get("applications") or [{}]
    return apps[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve_app", description="Run the lip-sync service locally.")
    p.add_argument("--config", type=Path, default=CONFIG, help="Serve config file (default serve_config.yaml)")
    p.add_argument("--host", default=os.environ.get("W2L_HOST", "127.0.0.1"), help="bind address (default loopback)")
    p.add_argument("--port", type=int, default=int(os.environ.get("W2L_PORT", "8000")))
    p.add_argument("--temp-dir", default=os.environ.get("W2L_RAY_TEMP_DIR"), help="Ray's temp dir")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    # Token auth protects a shared cluster; a local loopback service runs without it unless a token is given.
    if not os.environ.get("RAY_AUTH_TOKEN"):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve

    from wav2lip.errors import CheckpointError
    from wav2lip.pipeline import load_generator

    from .app import APP_NAME, build_app
    from .settings import Settings

    app_cfg = _app_config(args.config)
    settings = Settings(**(app_cfg.get("args") or {}))
    try:  # a corrupt checkpoint stops us here, naming the file, before any replica starts
        kind = getattr(load_generator(settings.checkpoint_name and settings.checkpoint_dir / settings.checkpoint_name,
                                      settings.checkpoint_dir), "renderer_kind", "wav2lip")  # fmt: skip
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    temp_dir = args.temp_dir or tempfile.mkdtemp(prefix="w2l-ray-")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _temp_dir=temp_dir)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build_app(settings), name=app_cfg.get("name", APP_NAME), route_prefix=app_cfg.get("route_prefix", "/"))
    url = f"http://{args.host}:{args.port}"
    print(f"lip-sync service ready at {url}  (renderer: {kind}; API docs {url}/docs; Ctrl-C stops)", flush=True)
    if args.host in ("127.0.0.1", "localhost", "::1"):
        print("listening on loopback only; use --host 0.0.0.0 (with W2L_API_KEY set) to serve other machines",
              flush=True)  # fmt: skip
    elif not settings.api_key:
        print("WARNING: serving on a public address without an API key (set W2L_API_KEY)", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C (even twice) ends in one clean shutdown
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    print("shutting down", flush=True)
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
