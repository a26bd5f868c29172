"""Every Prometheus metric of the sidecar, by name, in one place.

Metrics live on a `CollectorRegistry` that the caller passes in (the server exposes it at `/metrics`; tests
create their own), never on the process-global default registry. Label values come from small fixed sets:
never raw Button text, order ids or user data.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: `button_requests_total{status}` for a request that never got an HTTP answer (refused, reset, timed out).
CONNECTION_ERROR: Final = "connection_error"

#: `duplicates_total{kind}` values.
DUPLICATE_BATCH: Final = "source_request_id"
DUPLICATE_ORDER: Final = "order"

#: `filtered_batches_total{reason}` values: the whole set (consent, from the core, and the environment switch).
FILTER_REASONS: Final = ("gdpr_consent", "ccpa_opt_out", "environment")

#: `attribution_lookups_total{result}` values.
ATTRIBUTION_FOUND: Final = "found"
ATTRIBUTION_NOT_FOUND: Final = "not_found"

#: `dead_letters_total{reason}` values: the whole set.
DEAD_LETTER_REASONS: Final = ("button_rejected", "unknown_order", "invalid_request", "retries_exhausted")

# Button round trips range from a few ms (sandbox) to the request timeout.
_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# An ingest answer waits for an fsync (about a millisecond) and, with `when_full = "block"`, up to its timeout.
_SERVER_DURATION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The stages of an ingest call: mapping one small batch takes tens of microseconds.
_STAGE_BUCKETS: Final = (0.0001, 0.00025, 0.0005, *_SERVER_DURATION_BUCKETS)

#: `ingest_stage_seconds{stage}` values, in the order an ingest call goes through them.
STAGE_MAPPING: Final = "mapping"
STAGE_LOOKUPS: Final = "lookups"
STAGE_OUTBOX: Final = "outbox"


def status_class(status: int) -> str:
    """The `status` label of an HTTP answer: its class, e.g. `"2xx"`."""
    return f"{status // 100}xx"


class SidecarMetrics:
    """The pipeline's metrics, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.received_batches = Counter(
            "button_sidecar_received_batches_total",
            "mParticle batches handed to ingest (gRPC or HTTP), unusable ones and repeats included.",
            registry=registry,
        )
        self.received_events = Counter(
            "button_sidecar_received_events_total",
            "mParticle events received in ingested batches.",
            registry=registry,
        )
        self.rejected_events = Counter(
            "button_sidecar_rejected_events_total",
            "mParticle events refused as unusable (a whole unusable batch counts once), by rejection code.",
            ["code"],
            registry=registry,
        )
        self.outbox_enqueued_requests = Counter(
            "button_sidecar_outbox_enqueued_requests_total",
            "Requests written durably to the outbox, by request kind.",
            ["kind"],
            registry=registry,
        )
        self.button_requests = Counter(
            "button_sidecar_button_requests_total",
            "HTTP requests sent to Button, by answer class (2xx, 4xx, 5xx) or connection_error.",
            ["status"],
            registry=registry,
        )
        self.delivery_retries = Counter(
            "button_sidecar_delivery_retries_total",
            "Delivery attempts that failed transiently and were rescheduled.",
            registry=registry,
        )
        self.dead_letters = Counter(
            "button_sidecar_dead_letters_total",
            "Requests moved to the dead letters, by reason.",
            ["reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "button_sidecar_duplicates_total",
            "Ingested input skipped as a repeat: whole batches (source_request_id) or order creates (order).",
            ["kind"],
            registry=registry,
        )
        self.filtered_batches = Counter(
            "button_sidecar_filtered_batches_total",
            "Batches dropped on purpose, whole: by consent (gdpr_consent, ccpa_opt_out) or environment.",
            ["reason"],
            registry=registry,
        )
        self.attributions_remembered = Counter(
            "button_sidecar_attributions_remembered_total",
            "btn_ref tokens learned from deep links and written to the attribution store.",
            registry=registry,
        )
        self.attribution_lookups = Counter(
            "button_sidecar_attribution_lookups_total",
            "Attribution store lookups for order creates without a btn_ref of their own, by result.",
            ["result"],
            registry=registry,
        )
        self.delivered_requests = Counter(
            "button_sidecar_delivered_requests_total",
            "Requests Button acknowledged, by request kind.",
            ["kind"],
            registry=registry,
        )
        self.outbox_depth = Gauge(
            "button_sidecar_outbox_depth",
            "Requests in the outbox waiting for delivery (queued or in flight; dead letters not included).",
            registry=registry,
        )
        self.outbox_oldest_age = Gauge(
            "button_sidecar_outbox_oldest_age_seconds",
            "Age of the oldest request waiting for delivery; 0 when the outbox is empty.",
            registry=registry,
        )
        self.delivery_concurrency_limit = Gauge(
            "button_sidecar_delivery_concurrency_limit",
            "Current limit on requests in flight to Button (lowered while Button answers 429 or 503, and while "
            "delivery yields to ingest).",
            registry=registry,
        )
        self.delivery_yields = Counter(
            "button_sidecar_delivery_yields_total",
            "Times delivery lowered its concurrency limit because ingest calls were waiting on the event loop.",
            registry=registry,
        )
        self.button_request_duration = Histogram(
            "button_sidecar_button_request_duration_seconds",
            "Time from sending a request to Button until its answer (or failure).",
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        ingest_stage = Histogram(
            "button_sidecar_ingest_stage_seconds",
            "Time an ingest call (gRPC or HTTP, one batch or many) spent in each stage: mapping (the Rust core "
            "parsing and mapping its batches), lookups (attribution store and order ledger), outbox (until its "
            "requests were durable: waiting for the database thread, the writes, the commit and its fsync).",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=registry,
        )
        # Resolved once: a labelled child is a locked lookup, and every ingest call observes all three.
        self.ingest_mapping_seconds = ingest_stage.labels(stage=STAGE_MAPPING)
        self.ingest_lookups_seconds = ingest_stage.labels(stage=STAGE_LOOKUPS)
        self.ingest_outbox_seconds = ingest_stage.labels(stage=STAGE_OUTBOX)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason=reason)
        for kind in (DUPLICATE_BATCH, DUPLICATE_ORDER):
            self.duplicates.labels(kind=kind)
        for reason in FILTER_REASONS:
            self.filtered_batches.labels(reason=reason)
        for result in (ATTRIBUTION_FOUND, ATTRIBUTION_NOT_FOUND):
            self.attribution_lookups.labels(result=result)


class HttpServerMetrics:
    """The HTTP endpoint's metrics, registered on `registry` (the pipeline's, so `/metrics` shows both)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "button_sidecar_http_requests_total",
            "HTTP requests answered by the mParticle-compatible endpoint, by route (unmatched: other) and status code.",
            ["path", "status"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "button_sidecar_http_request_duration_seconds",
            "Time from receiving an HTTP request to its answer, by route (unmatched: other).",
            ["path"],
            buckets=_SERVER_DURATION_BUCKETS,
            registry=registry,
        )


class GrpcServerMetrics:
    """The gRPC service's metrics (unary calls; `Watch` is a stream), on `registry` (the pipeline's)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "button_sidecar_grpc_requests_total",
            "gRPC calls answered by the Sidecar service, by method and status code (OK, INVALID_ARGUMENT, ...).",
            ["method", "code"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "button_sidecar_grpc_request_duration_seconds",
            "Time from a gRPC call reaching its handler to its answer, by method.",
            ["method"],
            buckets=_SERVER_DURATION_BUCKETS,
            registry=registry,
        )
