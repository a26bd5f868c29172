"""Type stub of the Rust extension; checked against the built module by ``mypy.stubtest``."""

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Literal, final

__all__ = [
    "Attribution",
    "ButtonRequest",
    "HttpTransport",
    "Rejection",
    "Skip",
    "TransformConfig",
    "TransformResult",
    "Transformer",
    "__version__",
    "_parse_floor",
    "build_profile",
    "hash_email",
    "to_minor_units",
]
__version__: str
build_profile: str

_RequestKind = Literal["create_order", "update_order", "cancel_order", "refund", "activity", "app_event"]

@final
class TransformConfig:
    """Options of the mapping; a ValueError names the field that is wrong."""

    def __new__(
        cls,
        *,
        default_currency: str = "USD",
        include_tax_and_shipping: bool = False,
        send_email: bool = True,
        require_btn_ref: bool = False,
        forward_activity: bool = False,
        forward_app_events: bool = False,
        application_ids: Mapping[str, str] | None = None,
        gdpr_purpose: str | None = None,
    ) -> TransformConfig: ...
    @property
    def default_currency(self) -> str: ...
    @property
    def include_tax_and_shipping(self) -> bool: ...
    @property
    def send_email(self) -> bool: ...
    @property
    def require_btn_ref(self) -> bool: ...
    @property
    def forward_activity(self) -> bool: ...
    @property
    def forward_app_events(self) -> bool: ...
    @property
    def application_ids(self) -> dict[str, str]:
        """Button application id per platform (platform names lower-cased)."""
    @property
    def gdpr_purpose(self) -> str | None: ...

@final
class ButtonRequest:
    """One Button API call; kind ``refund`` is a partial refund for the delivery layer to resolve."""

    @property
    def kind(self) -> _RequestKind: ...
    @property
    def method(self) -> str | None: ...
    @property
    def path(self) -> str | None: ...
    @property
    def body(self) -> bytes | None:
        """JSON; never holds a plaintext email."""
    @property
    def order_id(self) -> str:
        """The order this request belongs to; empty for activity and app events."""
    @property
    def event_index(self) -> int: ...
    @property
    def btn_ref(self) -> str | None:
        """The ``btn_ref`` the body carries (creates and activity); None when it carries none."""

@final
class Rejection:
    """Why an event (``event_index`` >= 0) or the whole batch (-1) was not mapped."""

    @property
    def event_index(self) -> int: ...
    @property
    def code(self) -> str: ...
    @property
    def field(self) -> str:
        """JSON path, e.g. ``events[2].data.currency_code``; ``$`` for the whole payload."""
    @property
    def message(self) -> str: ...

@final
class Attribution:
    """A ``btn_ref`` learned for the batch's user."""

    @property
    def user_keys(self) -> list[str]: ...
    @property
    def btn_ref(self) -> str: ...
    @property
    def timestamp_ms(self) -> int: ...

@final
class Skip:
    """An event understood but not mapped, with the reason (a count, not an error)."""

    @property
    def event_index(self) -> int: ...
    @property
    def reason(self) -> str: ...

@final
class TransformResult:
    """The outcome of one batch."""

    @property
    def requests(self) -> list[ButtonRequest]: ...
    @property
    def rejections(self) -> list[Rejection]: ...
    @property
    def attributions(self) -> list[Attribution]: ...
    @property
    def skipped(self) -> list[Skip]: ...
    @property
    def event_count(self) -> int:
        """How many events the batch held (0 when it could not be read)."""
    @property
    def user_keys(self) -> list[str]:
        """``mpid:…``, ``customer_id:…``, ``idfa:…``, ``gaid:…``, ``mp_deviceid:…``."""
    @property
    def source_request_id(self) -> str | None: ...
    @property
    def environment(self) -> str | None: ...
    @property
    def filtered(self) -> str | None:
        """Why consent filtered the whole batch (``gdpr_consent``, ``ccpa_opt_out``); None otherwise."""

@final
class Transformer:
    """Maps mParticle batches to Button requests; thread-safe, releases the GIL while mapping."""

    def __new__(cls, config: TransformConfig | None = None) -> Transformer: ...
    @property
    def config(self) -> TransformConfig: ...
    def transform_json(self, raw: bytes | bytearray | str, received_at_ms: int | None = None) -> TransformResult:
        """One batch; ``received_at_ms`` stands in for missing timestamps (default: now)."""
    def transform_batch_proto(self, raw: bytes | bytearray, received_at_ms: int | None = None) -> TransformResult:
        """One serialised ``button_sidecar.v1.Batch`` (the typed form), mapped by the same rules."""
    def transform_ingest_request(self, raw: bytes | bytearray, received_at_ms: int | None = None) -> TransformResult:
        """One serialised ``button_sidecar.v1.IngestRequest``, as the gRPC server receives it."""
    def transform_ingest_bulk(self, raw: bytes | bytearray, received_at_ms: int | None = None) -> list[TransformResult]:
        """One serialised ``button_sidecar.v1.IngestBulkRequest``; ValueError if it is not a valid message."""
    def transform_many(
        self, raws: Sequence[bytes | bytearray | str], received_at_ms: int | None = None
    ) -> list[TransformResult]:
        """Many batches, in order, mapped with the GIL released."""

@final
class HttpTransport:
    """Delivery's HTTP client: a connection pool on a thread of its own (no GIL), answers collected in batches.

    ``send`` starts a request and returns at once; once ``fileno()`` is readable, ``completed()`` returns every
    finished request as ``(id, status, body, retry_after, error)``: status, body and Retry-After when an answer
    came, else ``error`` (``timed out``, or what failed; never the URL or a header).
    """

    def __new__(cls, *, timeout_secs: float, headers: list[tuple[str, str]] = ...) -> HttpTransport: ...
    def fileno(self) -> int: ...
    def send(
        self, id: int, method: str, url: str, headers: list[tuple[str, str]], body: bytes | None = None
    ) -> None: ...
    def completed(self) -> list[tuple[int, int | None, bytes, str | None, str | None]]: ...
    def close(self) -> None:
        """Abandon the requests under way (they never complete) and stop the client's thread."""

def hash_email(email: str) -> str:
    """SHA-256 hex of the trimmed, lower-cased email; a 64-hex value is taken as a hash."""

def to_minor_units(amount: str | int | Decimal, currency: str) -> int:
    """Exact decimal amount to integer minor units of an ISO 4217 currency (half-to-even)."""

def _parse_floor(raws: Sequence[bytes | bytearray | str]) -> int:
    """Benchmark floor: parse the JSON batches without mapping them; how many parsed."""
