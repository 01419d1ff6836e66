"""``JobRegistry`` deployment: the state of asynchronous renders, readable from any ingress.

Jobs live here (and on disk, so a registry restart keeps them), never in an ingress
replica's memory. The replica running a job reports progress as chunks finish; a
cancel request is recorded here and picked up by that replica. A running job whose
replica stops reporting is marked failed rather than left "running" forever.
"""

from __future__ import annotations

import time
from dataclasses import asdict, fields, replace
from pathlib import Path

from ray import serve

from wav2lip.errors import NotFound

from .records import JobRecord
from .store import RecordStore

TERMINAL = ("succeeded", "failed", "cancelled")


@serve.deployment(name="JobRegistry", max_ongoing_requests=256)
class JobRegistry:
    def __init__(self, data_dir: str, stale_after_s: float):
        self.records = RecordStore(Path(data_dir) / "jobs")
        self.stale_after_s = stale_after_s

    def _load(self, job_id: str) -> JobRecord:
        stored = self.records.get(job_id)
        if stored is None:
            raise NotFound(f"job {job_id} does not exist")
        known = {f.name for f in fields(JobRecord)}
        return JobRecord(**{k: v for k, v in stored.items() if k in known})

    def _save(self, job: JobRecord) -> JobRecord:
        job.updated_at = time.time()
        self.records.put(job.job_id, asdict(job))
        return job

    def create(self, job_id: str) -> JobRecord:
        return self._save(JobRecord(job_id, created_at=time.time()))

    def update(self, job_id: str, **changes) -> JobRecord:
        """Progress from the running replica; returns the job (so it sees a cancel request)."""
        job = self._load(job_id)
        if job.status in TERMINAL:
            return job
        job = replace(job, **changes)
        if job.status == "running":
            job.started_at = job.started_at or time.time()
            done, total = job.frames_done, job.frames_total
            job.progress = round(done / total, 4) if total else 0.0
            elapsed = time.time() - job.started_at
            job.eta_s = round(elapsed * (total - done) / done, 2) if done else None
        if job.status == "succeeded":
            job.progress, job.eta_s, job.frames_done = 1.0, 0.0, job.frames_total
        return self._save(job)

    def get(self, job_id: str) -> JobRecord:
        job = self._load(job_id)
        if job.status not in TERMINAL and time.time() - job.updated_at > self.stale_after_s:
            job.status = "failed"
            job.error = {"error": "job_lost", "message": "the replica running this job stopped; submit it again"}
            self._save(job)
        return job

    def cancel(self, job_id: str) -> JobRecord:
        """Ask for cancellation; a job not yet running is cancelled at once."""
        job = self._load(job_id)
        if job.status not in TERMINAL:
            job.cancel_requested = True
            if job.status == "queued":
                job.status = "cancelled"
            self._save(job)
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        return self._load(job_id).cancel_requested
