"""Errors the servers answer with. Each carries what the HTTP API needs to render it.

::

    RecursaError
    ├── ConfigError
    │   └── RequestError        a client sent something that cannot work (400)
    │       ├── ModelNotFound   the model name is unknown or cannot be served here (404)
    │       ├── RunNotFound     no stored run has this id (404)
    │       ├── BodyTooLarge    the request body is over the server's limit (413)
    │       └── PathNotAllowed  an MCP path lies outside the roots the server was given
    └── ServerBusy              every run slot is taken (429 with Retry-After)
"""

from __future__ import annotations

from recursa.errors import ConfigError, RecursaError

__all__ = [
    "BodyTooLarge",
    "ModelNotFound",
    "PathNotAllowed",
    "RequestError",
    "RunNotFound",
    "ServerBusy",
]


class RequestError(ConfigError):
    """A request that cannot work as sent. ``param`` names the offending field, if one does."""

    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        self.param = param
        if code is not None:
            self.code = code
        super().__init__(message)


class ModelNotFound(RequestError):
    """The model name maps to nothing this server can run."""

    status = 404
    code = "model_not_found"


class RunNotFound(RequestError):
    """No stored run has this id (it never existed, was pruned, or runs are not stored)."""

    status = 404
    code = "run_not_found"


class BodyTooLarge(RequestError):
    """The request body is larger than the server accepts."""

    status = 413
    code = "request_too_large"


class PathNotAllowed(RequestError):
    """A path resolves outside the folders the MCP server may read."""

    status = 403
    type = "permission_error"
    code = "path_not_allowed"


class ServerBusy(RecursaError):
    """Every run slot is in use; the client should retry after ``retry_after_s`` seconds."""

    status = 429
    type = "rate_limit_error"
    code = "server_busy"

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        super().__init__(
            f"the server is running its maximum of {limit} concurrent run(s); "
            f"retry in {retry_after_s}s"
        )
