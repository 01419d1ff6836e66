"""``Ref``: an ``ObjectRef`` carried unresolved inside an argument or a result.

Ray resolves only top-level ``ObjectRef`` arguments of a call; a ref inside another
object travels as the ref itself, and the callee decides when (and whether) to fetch
it. That is how audio features, avatars and rendered segments move between
deployments without passing through the process in the middle (the ingress): it
holds a ``Ref``, never the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray


@dataclass(frozen=True)
class Ref:
    """An ObjectRef carried unresolved; ``await ref.get()`` in the deployment that needs the value."""

    ref: ray.ObjectRef

    @classmethod
    def put(cls, value) -> Ref:
        """Put ``value`` in the object store (owned by this process) and box the ref."""
        return cls(ray.put(value))

    async def get(self):
        return await self.ref
