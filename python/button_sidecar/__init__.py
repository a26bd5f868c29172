"""button-sidecar: report mParticle commerce and attribution to Button from inside your infrastructure.

The mapping runs in a Rust core (``button_sidecar._core``); import it from here, not from ``_core``.
"""

from button_sidecar._core import (
    Attribution,
    ButtonRequest,
    Rejection,
    Skip,
    TransformConfig,
    Transformer,
    TransformResult,
    __version__,
    hash_email,
    to_minor_units,
)

__all__ = [
    "Attribution",
    "ButtonRequest",
    "Rejection",
    "Skip",
    "TransformConfig",
    "TransformResult",
    "Transformer",
    "__version__",
    "hash_email",
    "to_minor_units",
]
