"""The sidecar's servers: the gRPC service over the delivery pipeline, health, auth and the Watch hub.

`Sidecar` (in `app`) assembles them from a `SidecarConfig`; `serve` runs one until SIGTERM/SIGINT.
"""

from button_sidecar.server.app import Sidecar, StartupError, serve
from button_sidecar.server.grpc_service import AttributionLookup, KnownAttribution, NoAttributions

__all__ = ["AttributionLookup", "KnownAttribution", "NoAttributions", "Sidecar", "StartupError", "serve"]
