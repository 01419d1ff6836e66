"""What Serve says about the worker pool, read from any replica."""

from __future__ import annotations

from ray import serve

WORKER_DEPLOYMENT = "LipSyncWorker"


def running_workers(default: int) -> int:
    """Worker replicas Serve reports RUNNING (``default`` when the controller cannot say)."""
    try:
        app = serve.get_replica_context().app_name
        states = serve.status().applications[app].deployments[WORKER_DEPLOYMENT].replica_states
        return int(states.get("RUNNING", 0))
    except Exception:  # noqa: BLE001 - must answer even while status is unavailable
        return default
