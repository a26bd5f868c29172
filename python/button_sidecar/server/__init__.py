"""The sidecar's servers: the gRPC service and the mParticle-compatible HTTP endpoint over the delivery pipeline,
health, auth and the Watch hub.

`Sidecar` (in `app`) assembles them from a `SidecarConfig`; `serve` runs one until SIGTERM/SIGINT.
"""

from button_sidecar.server.app import Sidecar, StartupError, serve

__all__ = ["Sidecar", "StartupError", "serve"]
