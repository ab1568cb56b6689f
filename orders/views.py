"""HTTP: the webhook intake and the read API. No broker I/O here, ever."""

import ipaddress
import logging

from django.conf import settings
from django.db.models import Prefetch
from django_filters import rest_framework as filters
from rest_framework import generics
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import Order, OrderEvent, Source, Status, Strategy
from .serializers import OrderDetailSerializer, OrderSerializer, intake_response
from .services import record_rejected_alert, register_alert
from .validation import InvalidAlert, parse_json, redact_text, redacted, validate_alert

log = logging.getLogger("orderdesk.webhook")

ACCEPTED_CONTENT_TYPES = ("application/json", "text/plain")
UNAUTHORIZED = "unknown strategy or wrong secret"


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


def read_body(request, limit: int) -> bytes:
    """At most limit + 1 bytes, with or without Content-Length."""
    meta = request.META
    length = meta.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > limit:
        raise BodyTooLarge
    # A chunked upload de-chunked by the server has no Content-Length, and Django's own
    # stream would then read nothing: read the terminated WSGI input directly.
    stream = meta["wsgi.input"] if not length and meta.get("wsgi.input_terminated") else request
    data = _read_at_most(stream.read, limit + 1)
    if len(data) > limit:
        raise BodyTooLarge
    return data


def _ip_or_none(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None  # a forged X-Forwarded-For must not fail the insert (inet on PostgreSQL)


def sender_ip(request) -> str | None:
    if settings.WEBHOOK_TRUST_X_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return _ip_or_none(forwarded.split(",")[0])
    return _ip_or_none(request.META.get("REMOTE_ADDR") or "")


class AlwaysJSON(BaseContentNegotiation):
    """The webhook answers JSON whatever the Accept header says: a 406 would drop the alert
    without a record."""

    def select_parser(self, request, parsers):
        return None  # the view reads the body itself

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class WebhookView(APIView):
    """POST an alert. TradingView sends JSON as text/plain and cannot set headers, so the
    strategy's secret travels in the body."""

    authentication_classes: list = []
    permission_classes: list = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = AlwaysJSON
    throttle_classes: list = []

    def post(self, request):
        django_request = request._request
        ip = sender_ip(django_request)
        content_type = django_request.content_type or ""
        if content_type not in ACCEPTED_CONTENT_TYPES:
            return self._refuse(415, f"content type {content_type[:60]!r} is not application/json or text/plain",
                                ip, body="")
        try:
            raw = read_body(django_request, settings.WEBHOOK_MAX_BYTES)
        except BodyTooLarge:
            return self._refuse(413, f"body over {settings.WEBHOOK_MAX_BYTES} bytes", ip, body="")
        data = None
        try:
            data = parse_json(raw)
            alert = validate_alert(data)
        except InvalidAlert as exc:
            return self._refuse(400, exc.errors, ip, data=data, raw=raw)
        strategy = Strategy.authenticate(alert.strategy, alert.secret)
        if strategy is None:
            return self._refuse(401, UNAUTHORIZED, ip, data=data, raw=raw)
        result = register_alert(strategy=strategy, request=alert, source=Source.WEBHOOK, actor="webhook",
                                payload=redacted(data), sender_ip=ip)
        return Response(intake_response(result), status=201 if result.created else 200)

    def _refuse(self, status: int, reason, ip, *, data=None, raw: bytes = b"", body: str | None = None):
        if body is None:
            body = str(redacted(data)) if isinstance(data, dict) else redact_text(raw.decode("utf-8", "replace"))
        name = data.get("strategy") if isinstance(data, dict) else ""
        record_rejected_alert(status_code=status, reason=str(reason), sender_ip=ip,
                              strategy_name=name if isinstance(name, str) else "", body=body)
        log.info("webhook refused %s from %s: %s", status, ip, str(reason)[:300])
        payload = {"errors": reason} if isinstance(reason, dict) else {"detail": reason}
        return Response(payload, status=status)


class OrderFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=Status.choices)
    strategy = filters.CharFilter(field_name="strategy__name")
    symbol = filters.CharFilter(field_name="symbol", lookup_expr="iexact")
    tag = filters.CharFilter(field_name="tag", lookup_expr="startswith")
    created_after = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Order
        fields = ["status", "strategy", "symbol", "tag", "execution_type", "exchange"]


class OrderListView(generics.ListAPIView):
    serializer_class = OrderSerializer
    filterset_class = OrderFilter
    queryset = Order.objects.select_related("strategy", "alert").order_by("-id")


class OrderDetailView(generics.RetrieveAPIView):
    serializer_class = OrderDetailSerializer
    lookup_field = "command_id"
    queryset = Order.objects.select_related("strategy", "alert").prefetch_related(
        Prefetch("events", queryset=OrderEvent.objects.order_by("id"))
    )
