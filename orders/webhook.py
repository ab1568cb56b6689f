"""The webhook's intake over HTTP: read, parse and authenticate one delivery, register it
through the intake service, and say what to answer. Every refusal leaves a RejectedAlert.

TradingView sends JSON as text/plain and cannot set headers, so the strategy's secret
travels in the body. Every answer is JSON, and its status says whether sending the alert
again can help (503) or not (4xx).
"""

import logging
import math
from dataclasses import dataclass, field

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest

from orderdesk.network import HTTPS_REQUIRED, address_in, client_ip

from .models import Source, Strategy
from .serializers import explain_response, intake_response
from .services import explain_alert, record_rejected_alert, register_alert
from .throttles import webhook_limits
from .validation import InvalidAlert, parse_json, redact_text, redacted, validate_alert

log = logging.getLogger("orderdesk.webhook")

ACCEPTED_CONTENT_TYPES = ("application/json", "text/plain")
UNAUTHORIZED = "unknown strategy or wrong secret"
DATABASE_UNAVAILABLE = "database unavailable or busy: send the alert again shortly"
INTERNAL_ERROR = "internal error"


@dataclass(frozen=True)
class WebhookReply:
    status: int
    payload: dict
    headers: dict[str, str] = field(default_factory=dict)


class BodyTooLarge(Exception):
    pass


def _read_at_most(read, size: int) -> bytes:
    """A stream's read() may return less than asked before the end (PEP 3333 allows it on a
    socket-backed input): keep reading until `size` bytes or the end, never more."""
    chunks, total = [], 0
    while total < size:
        chunk = read(size - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _declares_more_than(length: str, limit: int) -> bool:
    # ASCII digits only: str.isdigit() also takes "²" (a Latin-1 header byte), which int()
    # refuses, and int() refuses more than 4300 digits.
    if not (length.isascii() and length.isdigit()):
        return False
    digits = length.lstrip("0")
    return len(digits) > len(str(limit)) or int(digits or "0") > limit


def read_body(request: HttpRequest, limit: int) -> bytes:
    """At most limit + 1 bytes, with or without Content-Length."""
    meta = request.META
    length = meta.get("CONTENT_LENGTH")
    if length and _declares_more_than(length, limit):
        raise BodyTooLarge
    # A chunked upload de-chunked by the server has no Content-Length, and Django's own
    # stream would then read nothing: read the terminated WSGI input directly.
    stream = meta["wsgi.input"] if not length and meta.get("wsgi.input_terminated") else request
    data = _read_at_most(stream.read, limit + 1)
    if len(data) > limit:
        raise BodyTooLarge
    return data


@dataclass
class _Delivery:
    """What is known so far about one POST: what its RejectedAlert row can show."""

    ip: str | None
    record: bool = True  # False when explaining: a user testing an alert leaves no row
    raw: bytes = b""
    data: dict | None = None

    def record_refusal(self, status: int, reason: str) -> None:
        if not self.record:
            return
        if self.data is not None:
            body = str(redacted(self.data))
            name = self.data.get("strategy")
        else:
            body, name = redact_text(self.raw.decode("utf-8", "replace")), ""
        record_rejected_alert(status_code=status, reason=reason, sender_ip=self.ip,
                              strategy_name=name if isinstance(name, str) else "", body=body)

    def refuse(self, status: int, reason: str | dict, headers: dict[str, str] | None = None) -> WebhookReply:
        self.record_refusal(status, str(reason))
        log.info("webhook refused %s from %s: %s", status, self.ip, str(reason)[:300])
        return WebhookReply(status, {"errors": reason} if isinstance(reason, dict) else {"detail": reason},
                            headers or {})

    def throttled(self, limit, wait_s: float, whose: str) -> WebhookReply:
        # The reason stays the same for every refusal of the window (one RejectedAlert row
        # with a count); when to send again is in Retry-After.
        return self.refuse(429, f"over the rate limit of {limit.rate} {whose}",
                           {"Retry-After": str(max(1, math.ceil(wait_s)))})


def receive_webhook(request: HttpRequest, explain: bool = False) -> WebhookReply:
    """One POST to the webhook, answered: 201/200 registered (200: a repeated alert_id),
    4xx refused and recorded, 503 retry later, 500 our fault (logged and recorded).
    `explain`: the same checks, answered 200 with every blocker's verdict per leg, and
    nothing registered or recorded."""
    delivery = _Delivery(client_ip(request), record=not explain)
    try:
        return _receive(request, delivery, explain)
    except (OperationalError, InterfaceError) as exc:
        # Unreachable, its pool exhausted, or (SQLite) still locked after the busy timeout:
        # the intake is one transaction, so nothing is half-registered, and a retry can
        # succeed. No RejectedAlert: the database that would hold it is the one failing.
        log.error("webhook from %s answered 503, database unavailable or busy: %s", delivery.ip,
                  str(exc).strip()[:300])
        return WebhookReply(503, {"detail": DATABASE_UNAVAILABLE},
                            {"Retry-After": str(settings.WEBHOOK_RETRY_AFTER_S)})
    except Exception as exc:  # noqa: BLE001 - a bug of ours: the client still gets JSON, we get the traceback
        log.exception("webhook from %s failed with an internal error", delivery.ip)
        delivery.record_refusal(500, f"{INTERNAL_ERROR}: {type(exc).__name__}: {exc}")
        return WebhookReply(500, {"detail": INTERNAL_ERROR})


def _receive(request: HttpRequest, delivery: _Delivery, explain: bool) -> WebhookReply:
    if settings.ORDERDESK_HTTPS and not request.is_secure():
        return delivery.refuse(403, HTTPS_REQUIRED)  # never a redirect: the POST would lose its body
    per_ip, per_strategy = webhook_limits()
    if (wait := per_ip.hit(delivery.ip or "unknown")) is not None:
        return delivery.throttled(per_ip, wait, "per sender address")
    content_type = request.content_type or ""
    if content_type not in ACCEPTED_CONTENT_TYPES:
        return delivery.refuse(415, f"content type {content_type[:60]!r} is not application/json or text/plain")
    try:
        delivery.raw = read_body(request, settings.WEBHOOK_MAX_BYTES)
    except BodyTooLarge:
        return delivery.refuse(413, f"body over {settings.WEBHOOK_MAX_BYTES} bytes")
    except OSError as exc:  # the client went away mid-body (Django's UnreadablePostError, a reset)
        return delivery.refuse(400, f"the body could not be read: {exc}")
    try:
        delivery.data = parse_json(delivery.raw)
        alert = validate_alert(delivery.data)
    except InvalidAlert as exc:
        return delivery.refuse(400, exc.errors)
    strategy = Strategy.authenticate(alert.strategy, alert.secret)
    if strategy is None:
        return delivery.refuse(401, UNAUTHORIZED)
    if strategy.allowed_ips and not address_in(delivery.ip, strategy.allowed_ips):
        return delivery.refuse(403, f"sender address {delivery.ip} is not in this strategy's allowed_ips")
    if (wait := per_strategy.hit(str(strategy.pk))) is not None:
        return delivery.throttled(per_strategy, wait, "per strategy")
    intake = dict(strategy=strategy, request=alert, source=Source.WEBHOOK, actor="webhook",
                  payload=redacted(delivery.data), sender_ip=delivery.ip)
    try:
        if explain:
            return WebhookReply(200, explain_response(explain_alert(**intake)))
        result = register_alert(**intake)
    except InvalidAlert as exc:  # legs in lots whose lot size the symbol master does not give
        return delivery.refuse(400, exc.errors)
    return WebhookReply(201 if result.created else 200, intake_response(result))
