"""The regional token gate: any service, any language, validated through its proxy.

``tokensync gate --region R`` answers ``/auth`` for nginx ``auth_request``, Envoy
``ext_authz`` and Traefik ``ForwardAuth``, and ``/introspect`` (RFC 7662), from the
region's Redis with ``shared.AsyncValidator``'s exact rules. Imports ``shared`` only.
"""

from __future__ import annotations

from gate.app import Gate, GateRequest, GateResponse
from gate.server import GateOptions, run

__all__ = ["Gate", "GateOptions", "GateRequest", "GateResponse", "run"]
