"""HTTP: the webhook intake and the read API. No broker I/O here, ever."""

from django.db import transaction
from django.db.models import F, Prefetch, Q
from django.shortcuts import get_object_or_404
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, permissions, status
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from brokers.base import BookStatus
from brokers.instruments import EXCHANGES as MASTER_EXCHANGES
from brokers.models import Instrument

from . import cancels, modifications, reconcile, squareoff
from .export import csv_response
from .models import ExternalOrder, Order, OrderEvent, Status
from .schema import (
    cancel_all_schema,
    cancel_schema,
    close_positions_schema,
    explain_schema,
    external_order_list_schema,
    instrument_list_schema,
    modify_schema,
    order_detail_schema,
    order_list_schema,
    reconciliation_schema,
    token_schema,
    webhook_schema,
)
from .serializers import (
    CancelAllSerializer,
    ClosePositionsSerializer,
    ExternalOrderSerializer,
    InstrumentSerializer,
    OrderDetailSerializer,
    OrderSerializer,
    ReconciliationSerializer,
    close_response,
)
from .validation import validate_modification
from .webhook import receive_webhook


class AlwaysJSON(BaseContentNegotiation):
    """JSON whatever the Accept header says: a 406 would drop a webhook alert without a
    record, or fail a health probe."""

    def select_parser(self, request, parsers):
        return None  # the webhook reads its body itself (orders.webhook); health takes none

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class WebhookView(APIView):
    """POST an alert: orders.webhook reads, checks and registers it and says what to answer."""

    authentication_classes: list = []
    permission_classes: list = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = AlwaysJSON
    throttle_classes: list = []  # orders.throttles, counted inside the intake (a 429 is recorded)
    plain_http_allowed = True  # refused, and recorded, by orders.webhook under ORDERDESK_HTTPS

    @webhook_schema
    def post(self, request):
        reply = receive_webhook(request._request)
        return Response(reply.payload, status=reply.status, headers=reply.headers)


@extend_schema_view(post=extend_schema(exclude=True))  # the same operation as webhook/
class WebhookNoSlashView(WebhookView):
    pass


class ExplainView(WebhookView):
    """POST an alert as to the webhook: what every check would say of each leg; nothing stays."""

    @explain_schema
    def post(self, request):
        reply = receive_webhook(request._request, explain=True)
        return Response(reply.payload, status=reply.status, headers=reply.headers)


class OrderFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=Status.choices)
    strategy = filters.CharFilter(field_name="strategy__name")
    symbol = filters.CharFilter(field_name="symbol", lookup_expr="iexact")
    tag = filters.CharFilter(field_name="tag", lookup_expr="startswith")
    tag_family = filters.CharFilter(field_name="tag_family")
    tag_code = filters.CharFilter(field_name="tag_code")
    in_doubt = filters.BooleanFilter(method="filter_in_doubt", label="in doubt (sent, no broker id)")
    created_after = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Order
        fields = ["status", "strategy", "symbol", "tag", "tag_family", "tag_code", "execution_type", "exchange",
                  "source"]

    def filter_in_doubt(self, queryset, name, value):
        in_doubt = {"status": Status.SENT_TO_BROKER, "broker_order_id__isnull": True}
        return queryset.filter(**in_doubt) if value else queryset.exclude(**in_doubt)


class CSVRenderer(BaseRenderer):
    """`?format=csv` (or Accept: text/csv): the list streams itself, unpaginated (orders.export)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, bytes | str) else b""  # errors only: the rows never pass here


@extend_schema_view(get=order_list_schema)
class OrderListView(generics.ListAPIView):
    serializer_class = OrderSerializer
    filterset_class = OrderFilter
    queryset = Order.objects.select_related("strategy", "alert").order_by("-id")
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer, CSVRenderer]

    def list(self, request, *args, **kwargs):
        if request.accepted_renderer.format == "csv":
            return csv_response(self.filter_queryset(self.get_queryset()))
        return super().list(request, *args, **kwargs)

    def finalize_response(self, request, response, *args, **kwargs):
        # A refused CSV request (a bad filter, no token) answers its error in JSON, like the API.
        renderer = getattr(request, "accepted_renderer", None)
        if renderer is not None and renderer.format == "csv" and not getattr(response, "streaming", False):
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


@extend_schema_view(get=order_detail_schema)
class OrderDetailView(generics.RetrieveAPIView):
    serializer_class = OrderDetailSerializer
    lookup_field = "command_id"
    queryset = Order.objects.select_related("strategy", "alert").prefetch_related(
        Prefetch("events", queryset=OrderEvent.objects.order_by("id"))
    )


class InstrumentFilter(filters.FilterSet):
    exchange = filters.ChoiceFilter(choices=[(e, e) for e in MASTER_EXCHANGES])
    q = filters.CharFilter(method="search", max_length=64,
                           label="the start of a trading symbol or of an underlying (any case)")

    class Meta:
        model = Instrument
        fields = ["exchange", "q"]

    def search(self, queryset, name, value):
        value = value.strip().upper()  # the master's symbols are stored upper case
        return queryset.filter(Q(trading_symbol__startswith=value) | Q(symbol__startswith=value)) if value else queryset


@extend_schema_view(get=instrument_list_schema)
class InstrumentListView(generics.ListAPIView):
    """The dashboard's symbol search."""

    serializer_class = InstrumentSerializer
    filterset_class = InstrumentFilter
    queryset = Instrument.objects.order_by("exchange", "symbol", "expiry", F("strike").asc(nulls_first=True),
                                           "trading_symbol")


class ExternalOrderFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=[(s.value, s.value) for s in BookStatus])
    symbol = filters.CharFilter(max_length=64)
    since = filters.IsoDateTimeFilter(field_name="first_seen_at", lookup_expr="gte")

    class Meta:
        model = ExternalOrder
        fields = ["status", "symbol", "since"]


@extend_schema_view(get=external_order_list_schema)
class ExternalOrderListView(generics.ListAPIView):
    serializer_class = ExternalOrderSerializer
    filterset_class = ExternalOrderFilter
    queryset = ExternalOrder.objects.order_by("-first_seen_at", "-id")


class ReconciliationView(APIView):
    @reconciliation_schema
    def get(self, request):
        return Response(ReconciliationSerializer(reconcile.view()).data)


def needs_permission(perm: str, what: str) -> type[permissions.BasePermission]:
    class HasPermission(permissions.BasePermission):
        message = f"{what} needs the permission {perm}"

        def has_permission(self, request, view):
            return bool(request.user and request.user.is_authenticated and request.user.has_perm(perm))

    return HasPermission


CanCancelOrders = needs_permission("orders.cancel_order", "cancelling orders")
CanModifyOrders = needs_permission("orders.modify_order", "modifying orders")


def _actor(request) -> str:
    return f"api:{request.user.get_username()}"[:64]


def _cancelled(order: Order, outcome: str) -> dict:
    return {"command_id": order.command_id, "status": order.status, "tag": order.tag, "cancel": outcome}


class OrderCancelView(APIView):
    """POST: cancel one order. Records the request; the broker's cancel is a worker's job."""

    permission_classes = [CanCancelOrders]

    @cancel_schema
    def post(self, request, command_id):
        order = get_object_or_404(Order, command_id=command_id)
        try:
            with transaction.atomic():
                outcome = cancels.request_cancel(order, _actor(request))
        except cancels.NotCancellable as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        order.refresh_from_db()
        return Response(_cancelled(order, outcome))


class OrderModifyView(APIView):
    """POST price, trigger_price and/or qty (the new total): a worker asks the broker."""

    permission_classes = [CanModifyOrders]

    @modify_schema
    def post(self, request, command_id):
        order = get_object_or_404(Order, command_id=command_id)
        values, errors = validate_modification(request.data)
        if errors:
            return Response({"errors": errors}, status=status.HTTP_400_BAD_REQUEST)
        try:
            with transaction.atomic():
                modification = modifications.request_modify(order, _actor(request), **values)
        except modifications.NotModifiable as exc:
            return Response({"detail": str(exc)},
                            status=status.HTTP_409_CONFLICT if exc.conflict else status.HTTP_400_BAD_REQUEST)
        return Response({"command_id": order.command_id, "modification": modification.pk,
                         "requested": modification.requested()}, status=status.HTTP_202_ACCEPTED)


class OrderCancelAllView(APIView):
    """POST: cancel every open order (optionally one strategy's, one symbol's)."""

    permission_classes = [CanCancelOrders]

    @cancel_all_schema
    def post(self, request):
        query = CancelAllSerializer(data=request.data)
        query.is_valid(raise_exception=True)
        acted = cancels.cancel_each(cancels.open_orders(**query.validated_data), _actor(request))
        return Response({"orders": [_cancelled(order, outcome) for order, outcome in acted]})


class TokenView(ObtainAuthToken):
    """POST a username and password: that user's API token. A failed login counts towards
    django-axes' lockout of the username + client address pair."""

    authentication_classes: list = []

    @token_schema
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)

    def get_serializer_context(self):
        # axes marks a locked-out login on the request it is handed, and its middleware looks
        # at Django's request, not at DRF's wrapper around it.
        return {**super().get_serializer_context(), "request": self.request._request}


CanPlaceManualOrders = needs_permission("orders.place_manual_order", "closing positions")


class ClosePositionsView(APIView):
    """POST: square off every open position that matches (optionally one strategy's, exchange's,
    symbol's): cancel its open orders, then register its exit."""

    permission_classes = [CanPlaceManualOrders]

    @close_positions_schema
    def post(self, request):
        query = ClosePositionsSerializer(data=request.data)
        query.is_valid(raise_exception=True)
        return Response(close_response(squareoff.close(actor=_actor(request), **query.validated_data)))
