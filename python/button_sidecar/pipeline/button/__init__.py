"""Everything that knows the Button API: the HTTP client, answer classification and refund resolution."""

from button_sidecar.pipeline.button.client import (
    APP_KINDS,
    ButtonClient,
    ButtonResponse,
    ButtonUnreachable,
    application_id_of,
    classify,
    order_path,
)
from button_sidecar.pipeline.button.refund import RefundError, apply_refund
from button_sidecar.pipeline.button.service import ButtonDeliveryService

__all__ = [
    "APP_KINDS",
    "ButtonClient",
    "ButtonDeliveryService",
    "ButtonResponse",
    "ButtonUnreachable",
    "RefundError",
    "application_id_of",
    "apply_refund",
    "classify",
    "order_path",
]
