"""Servers that put an RLM behind protocols other programs already speak.

- :mod:`recursa.server.openai_api`: an OpenAI-compatible HTTP API (``recursa serve``).
- :mod:`recursa.server.mcp_server`: an MCP server over stdio or streamable HTTP (``recursa mcp``).

Both need the ``server`` extra (``pip install 'recursa[server]'``); nothing here is imported by
``import recursa``.
"""

from recursa.server.config import ModelChoice, ServerConfig, tighten_limits
from recursa.server.errors import (
    BodyTooLarge,
    ModelNotFound,
    PathNotAllowed,
    RequestError,
    RunNotFound,
    ServerBusy,
)

__all__ = [
    "BodyTooLarge",
    "ModelChoice",
    "ModelNotFound",
    "PathNotAllowed",
    "RequestError",
    "RunNotFound",
    "ServerBusy",
    "ServerConfig",
    "tighten_limits",
]
