"""The FastAPI app the ingress serves: its error bodies and the edge middleware.

Its own module so that route groups (the ingress, the session routes) can share it.
"""

from fastapi import FastAPI

from .errors import STATUS
from .http import Edge, EdgeConfig, install_error_handlers
from .schemas import ErrorBody

api = FastAPI(
    title="Wav2Lip talking-head service",
    version="1.0.0",
    description="Text or audio in, a lip-synced MP4 of an avatar out. Errors are JSON {error, message}.",
    # no 307 to the same path with a slash added: its Location would be built from the client's Host header
    redirect_slashes=False,
    responses={s: {"model": ErrorBody} for s in sorted(set(STATUS.values()) | {400, 401, 403, 416, 422})},
)
install_error_handlers(api)
#: API key, CORS and the streaming upload limit; added at import (Starlette freezes
#: middleware once serving), configured from the settings when the replica starts.
edge = EdgeConfig()
api.add_middleware(Edge, config=edge)
