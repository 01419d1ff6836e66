"""What Serve says about the worker pools, read from any replica."""

from __future__ import annotations

from ray import serve

WORKER_DEPLOYMENT = "LipSyncWorker"  #: whole renders' chunks
LIVE_WORKER_DEPLOYMENT = "LiveWorker"  #: live sessions' fragments (the same class, a pool of its own)


def running_workers(default: int, deployment: str = WORKER_DEPLOYMENT) -> int:
    """Replicas of ``deployment`` Serve reports RUNNING (``default`` when the controller cannot say)."""
    try:
        app = serve.get_replica_context().app_name
        states = serve.status().applications[app].deployments[deployment].replica_states
        return int(states.get("RUNNING", 0))
    except Exception:  # noqa: BLE001 - must answer even while status is unavailable
        return default
