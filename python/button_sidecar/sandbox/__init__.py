"""A local Button-compatible API server for development, tests and benchmarks.

Strict validation, an in-memory order store and fault injection; run it with ``button-sidecar sandbox``
or in-process with ``url = await SandboxServer(SandboxConfig(...)).start()``.
"""

from button_sidecar.sandbox.faults import FaultConfig
from button_sidecar.sandbox.server import SandboxConfig, SandboxServer

__all__ = ["FaultConfig", "SandboxConfig", "SandboxServer"]
