"""HTTP: the webhook intake and the read API. No broker I/O here, ever."""

import logging

from django.conf import settings
from django.db.models import Prefetch
from django_filters import rest_framework as filters
from rest_framework import generics
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


def read_body(request, limit: int) -> bytes:
    """At most limit + 1 bytes, with or without Content-Length."""
    meta = request.META
    length = meta.get("CONTENT_LENGTH")
    if length:
        try:
            if int(length) > limit:
                raise BodyTooLarge
        except ValueError:
            pass
        data = request.read(limit + 1)
    elif meta.get("wsgi.input_terminated"):
        # Chunked upload de-chunked by the server: Django's stream would read nothing.
        data = meta["wsgi.input"].read(limit + 1)
    else:
        data = request.read(limit + 1)
    if len(data) > limit:
        raise BodyTooLarge
    return data


def sender_ip(request) -> str | None:
    if settings.WEBHOOK_TRUST_X_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[0].strip() or None
    return request.META.get("REMOTE_ADDR") or None


class WebhookView(APIView):
    """POST an alert. TradingView sends JSON as text/plain and cannot set headers, so the
    strategy's secret travels in the body."""

    authentication_classes: list = []
    permission_classes: list = []
    renderer_classes = [JSONRenderer]
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
                              strategy_name=name if isinstance(name, str) else "", body=body[:4096])
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
