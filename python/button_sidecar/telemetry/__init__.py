"""Metrics and internal events of the sidecar."""

from button_sidecar.telemetry.metrics import HttpServerMetrics, SidecarMetrics

__all__ = ["HttpServerMetrics", "SidecarMetrics"]
