"""Delivery to Button: partial refunds resolved against the order ledger, answers classified, ledger kept."""

from __future__ import annotations

import dataclasses

import orjson

from button_sidecar.pipeline.button.client import (
    APP_KINDS,
    ButtonClient,
    ButtonUnreachable,
    application_id_of,
    classify,
    error_message,
    order_path,
)
from button_sidecar.pipeline.button.refund import RefundError, apply_refund
from button_sidecar.pipeline.ledger import LedgerOrder, OrderLedger
from button_sidecar.pipeline.records import OutboxRow
from button_sidecar.pipeline.retry import Delivered, Outcome, Reject, Retry
from button_sidecar.pipeline.worker import Request


class ButtonDeliveryService:
    """The Button side of delivery (a `DeliveryService`).

    - `create_order`, `cancel_order`, activity and app events go out as the Rust core built them; activity
      and app events to the Merchant Library API as the body's `application_id` (without one they cannot
      be authenticated: a dead letter, `invalid_request`; ingest already leaves such requests out).
    - A `refund` (partial refund intent) is resolved when its turn comes, i.e. after every earlier request
      of the same order was delivered: the order comes from the ledger, else from `GET /v1/order/{id}`;
      the refund is subtracted (`refund.apply_refund`) and the result sent as a full-state
      `POST /v1/order/{id}` (`update_order`), or `DELETE /v1/order/{id}` (`cancel_order`) when nothing is
      left. The worker stores that resolved request in the row, so a retry sends the same full state again
      instead of subtracting twice. An order neither the ledger nor Button knows is a dead letter
      (`unknown_order`).
    - The ledger follows Button's acknowledgements: a create is recorded, an update replaces the order,
      a cancel marks it deleted.
    """

    def __init__(self, client: ButtonClient, ledger: OrderLedger) -> None:
        self._client = client
        self._ledger = ledger

    async def prepare(self, row: OutboxRow) -> Request | Outcome:
        if row.kind != "refund":
            return Request.of(row)
        order_id = row.order_key
        if order_id is None or row.body is None:
            return Reject("invalid_request", "a refund needs an order id and a body")
        order = await self._ledger.get(order_id)
        if order is None:
            found = await self._fetch_order(order_id)
            if not isinstance(found, LedgerOrder):
                return found
            order = found
        if order.deleted:
            return Reject("unknown_order", f"order {order_id} was cancelled before this refund")
        try:
            refund = orjson.loads(row.body)
            if not isinstance(refund, dict):
                raise RefundError("the refund body must be a JSON object")
            reduced = apply_refund(order.fields, refund)
        except (orjson.JSONDecodeError, RefundError) as error:
            return Reject("invalid_request", f"cannot apply the refund to order {order_id}: {error}")
        if reduced is None:
            return Request("cancel_order", "DELETE", order_path(order_id), None)
        return Request("update_order", "POST", order_path(order_id), orjson.dumps(reduced))

    async def _fetch_order(self, order_id: str) -> LedgerOrder | Outcome:
        """The order as Button has it, or the outcome that stops the refund for now (retry) or for good."""
        try:
            response = await self._client.request("GET", order_path(order_id))
        except ButtonUnreachable as error:
            return Retry(f"looking up the order: {error}")
        if response.status == 404:
            return Reject(
                "unknown_order", f"unknown order {order_id!r}: not in the ledger, and Button answered 404", 404
            )
        outcome = classify("get_order", response)
        if isinstance(outcome, Retry):
            return dataclasses.replace(outcome, error=f"looking up the order: {outcome.error}")
        if isinstance(outcome, Reject):
            return outcome
        try:
            envelope = orjson.loads(response.body)
            found = envelope["object"]
            if not isinstance(found, dict):
                raise TypeError("object is not an order")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return Retry(f"looking up the order: unreadable answer ({error_message(response)})", response.status)
        return LedgerOrder(order_id, found, deleted=found.get("status") == "deleted")

    async def send(self, row: OutboxRow, request: Request) -> Outcome:
        if request.method is None or request.path is None:
            return Reject("invalid_request", f"a {request.kind} request has no method or path")
        app_id = None
        if request.kind in APP_KINDS:
            app_id = application_id_of(request.body)
            if app_id is None:
                return Reject("invalid_request", f"a {request.kind} request has no application_id to authenticate with")
        try:
            response = await self._client.request(request.method, request.path, request.body, application_id=app_id)
        except ButtonUnreachable as error:
            return Retry(str(error))
        return classify(request.kind, response)

    async def delivered(self, row: OutboxRow, request: Request, outcome: Delivered) -> None:
        order_id = row.order_key
        if order_id is None:
            return
        if request.kind == "cancel_order":
            await self._ledger.mark_deleted(order_id)
        elif request.kind in ("create_order", "update_order") and request.body is not None:
            # A duplicate create means Button had the order already; what it holds is most likely our own
            # earlier attempt, but an order recorded before stays as it is.
            await self._ledger.record(order_id, request.body, replace=not outcome.duplicate)
