"""The service's own metrics, exported with Ray Serve's through Ray's Prometheus endpoint.

Names appear with Ray's ``ray_`` prefix, e.g. ``ray_lipsync_request_seconds``
(see docs/operations.md for scraping).
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

_LATENCY_BUCKETS = [0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 300]
_RTF_BUCKETS = [0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 4, 8]


class ServiceMetrics:
    def __init__(self):
        self.request_seconds = Histogram(
            "lipsync_request_seconds", description="end-to-end render request latency",
            boundaries=_LATENCY_BUCKETS, tag_keys=("cache", "renderer"),
        )  # fmt: skip
        self.real_time_factor = Histogram(
            "lipsync_real_time_factor", description="processing time / output duration (cache misses)",
            boundaries=_RTF_BUCKETS, tag_keys=("renderer",),
        )  # fmt: skip
        self.cache = Counter("lipsync_cache_total", description="result cache lookups", tag_keys=("result",))
        self.chunk_retries = Counter("lipsync_chunk_retries_total", description="chunk attempts that were retried")
        self.rejected = Counter("lipsync_rejected_total", description="requests shed with 503 (overload)")
        self.pending = Gauge("lipsync_pending_requests", description="renders in progress on this ingress replica")
        self.first_fragment_seconds = Histogram(
            "lipsync_stream_first_fragment_seconds", description="stream request to its first published fragment",
            boundaries=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.streams = Counter("lipsync_streams_total", description="streams opened, by outcome", tag_keys=("outcome",))

    def observe(self, total_s: float, rtf: float, hit: bool, renderer: str, retries: int) -> None:
        self.request_seconds.observe(total_s, tags={"cache": "hit" if hit else "miss", "renderer": renderer})
        self.cache.inc(tags={"result": "hit" if hit else "miss"})
        if not hit:
            self.real_time_factor.observe(rtf, tags={"renderer": renderer})
        if retries:
            self.chunk_retries.inc(retries)
