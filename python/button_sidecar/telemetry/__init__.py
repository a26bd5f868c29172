"""Metrics and internal events of the sidecar."""

from button_sidecar.telemetry.metrics import GrpcServerMetrics, HttpServerMetrics, SidecarMetrics

__all__ = ["GrpcServerMetrics", "HttpServerMetrics", "SidecarMetrics"]
