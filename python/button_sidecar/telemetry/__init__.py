"""Metrics and internal events of the sidecar."""

from button_sidecar.telemetry.metrics import SidecarMetrics

__all__ = ["SidecarMetrics"]
