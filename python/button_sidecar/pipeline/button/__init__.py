"""Everything that knows the Button API: the HTTP client, answer classification and refund resolution."""

from button_sidecar.pipeline.button.client import ButtonClient, ButtonResponse, ButtonUnreachable, classify, order_path
from button_sidecar.pipeline.button.refund import RefundError, apply_refund
from button_sidecar.pipeline.button.service import ButtonDeliveryService

__all__ = [
    "ButtonClient",
    "ButtonDeliveryService",
    "ButtonResponse",
    "ButtonUnreachable",
    "RefundError",
    "apply_refund",
    "classify",
    "order_path",
]
