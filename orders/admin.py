"""The blotter: every order, its tag and its whole audit trail, read-only."""

from collections import Counter

from django.contrib import admin, messages
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.utils import timezone
from django.utils.html import format_html

from . import cancels, feedstate, squareoff, targets
from .export import csv_response
from .models import (
    TAG_CODES,
    TAG_FAMILIES,
    TRADINGVIEW_SENDER_IPS,
    Alert,
    AuditCheck,
    BrokerFunds,
    BrokerPosition,
    EventKind,
    ExternalOrder,
    Fill,
    Notification,
    Order,
    OrderEvent,
    OrderFeedState,
    OrderModification,
    Position,
    PositionDifference,
    Reconciliation,
    RejectedAlert,
    SquareOff,
    SquareOffDay,
    Status,
    Strategy,
    TargetFollowUp,
    WatcherLease,
)
from .selectors import position_totals, positions_with_prices


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class TagPartFilter(admin.SimpleListFilter):
    """Every tag family / code the desk writes (indexed columns), and "none"."""

    field = ""
    values: tuple = ()

    def lookups(self, request, model_admin):
        return [(v, v) for v in self.values] + [("none", "no tag" if self.field == "tag_family" else "no code")]

    def queryset(self, request, queryset):
        if self.value() == "none":
            return queryset.filter(**{self.field: ""})
        if self.value():
            return queryset.filter(**{self.field: self.value()})
        return queryset


class TagFamilyFilter(TagPartFilter):
    title = parameter_name = field = "tag_family"
    values = TAG_FAMILIES


class TagCodeFilter(TagPartFilter):
    title = parameter_name = field = "tag_code"
    values = TAG_CODES


def ist_ms(moment) -> str:
    """An audit time in IST to the millisecond."""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if moment else "-"


class InDoubtFilter(admin.SimpleListFilter):
    title = "in doubt"
    parameter_name = "in_doubt"
    IN_DOUBT = {"status": Status.SENT_TO_BROKER, "broker_order_id__isnull": True}

    def lookups(self, request, model_admin):
        return [("yes", "sent, no broker id yet"), ("no", "not in doubt")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(**self.IN_DOUBT)
        if self.value() == "no":
            return queryset.exclude(**self.IN_DOUBT)
        return queryset


class ReadOnlyInline(admin.TabularInline):
    """Rows of an order's record on its page: listed oldest first, never added or changed."""

    extra = 0
    can_delete = False
    ordering = ["id"]

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class OrderEventInline(ReadOnlyInline):
    model = OrderEvent
    fields = ["at_ms", "kind", "from_status", "to_status", "tag", "actor", "detail"]

    @admin.display(description="at (IST)", ordering="at")
    def at_ms(self, obj):
        return ist_ms(obj.at)


STATUS_COLOURS = {Status.CREATED: "#6c757d", Status.SENT_TO_BROKER: "#0d6efd", Status.EXECUTED: "#198754",
                  Status.FAILED: "#dc3545"}
ORDER_FIELDS = ["command_id", "alert", "leg", "slice", "strategy", "source", "execution_type", "exchange", "symbol", "side",
                "qty", "order_type", "price", "trigger_price", "product", "status", "tag", "tag_family", "tag_code",
                "broker_order_id", "filled_qty", "avg_price", "working_qty", "working_price", "working_trigger_price",
                "cancel_requested_at", "created_at", "sent_at", "updated_at"]
JOURNEY = [("claimed", EventKind.CLAIMED), ("broker ack", EventKind.BROKER_ACCEPTED)]


class ModificationInline(ReadOnlyInline):
    """Each requested change of the order's terms, and what the broker answered."""

    model = OrderModification
    fields = ["requested_at", "actor", "qty", "price", "trigger_price", "outcome", "message", "answered_at"]


class FillInline(ReadOnlyInline):
    model = Fill
    fields = ["at_ms", "qty", "price", "cum_qty", "realized_pnl", "broker_fill_id"]

    @admin.display(description="at (IST)", ordering="at")
    def at_ms(self, obj):
        return ist_ms(obj.at)


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    """The blotter: fits 1400 px; the broker id and the rest are on the order's own page."""

    list_display = ["created", "strategy", "symbol", "side", "qty", "filled", "status_badge", "reason"]
    list_display_links = ["created"]
    list_filter = ["status", TagFamilyFilter, TagCodeFilter, "strategy", "execution_type", "source", InDoubtFilter,
                   "exchange", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["=command_id"]  # see get_search_results
    search_help_text = "a command id, a broker order id, an alert id or a symbol (exact)"
    list_select_related = ["strategy"]
    # No date_hierarchy: its date query over the filtered rows and a second count scan cost
    # 72 ms (today) and 156 ms (a tag code) at 1M orders in benchmarks/blotter.py; the
    # created_at filter (today by default) does the same job.
    inlines = [OrderEventInline, FillInline, ModificationInline]

    def get_search_results(self, request, queryset, search_term):
        """Exact matches, each through its own index: the ORM's OR of icontains over four
        columns and a join scanned every order (361 ms at 100k orders in benchmarks/blotter.py)."""
        term = search_term.strip()
        if not term:
            return queryset, False
        latest = Order.objects.order_by("-id").values_list("id", flat=True)
        ids = {*latest.filter(command_id=term.lower())[:1], *latest.filter(broker_order_id=term)[:100],
               *latest.filter(alert__alert_id=term)[:1000], *latest.filter(symbol=term.upper())[:5000]}
        return queryset.filter(pk__in=ids), False
    show_full_result_count = False
    actions = ["export_csv", "cancel_orders"]

    @admin.display(description="created (IST)", ordering="created_at")
    def created(self, obj):
        return timezone.localtime(obj.created_at).strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="filled / avg")
    def filled(self, obj):
        return f"{obj.filled_qty}/{obj.qty}" + (f" @ {obj.avg_price.normalize():f}" if obj.avg_price else "")

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return format_html('<span style="background:{};color:#fff;padding:1px 7px;border-radius:9px;'
                           'white-space:nowrap">{}</span>', STATUS_COLOURS.get(obj.status, "#6c757d"), obj.status)

    @admin.display(description="reason", ordering="tag")
    def reason(self, obj):
        shown = obj.tag if len(obj.tag) <= 90 else obj.tag[:87] + "..."
        return format_html('<span title="{}">{}</span>', obj.tag, shown)

    def get_fields(self, request, obj=None):
        extra = ["journey"] + (["alert_body"] if request.user.is_superuser else [])
        return ORDER_FIELDS + extra

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)

    @admin.display(description="journey (ms between steps)")
    def journey(self, obj):
        """received -> registered -> claimed -> broker ack -> terminal, from the audit rows."""
        events = list(obj.events.order_by("id").values_list("kind", "to_status", "at"))
        steps = [("received", obj.alert.received_at), ("registered", obj.created_at)]
        for label, kind in JOURNEY:
            steps += [(label, at) for k, _, at in events if k == kind][:1]
        steps += [(to.lower(), at) for k, to, at in events if to in (Status.EXECUTED, Status.FAILED)][-1:]
        parts, previous = [], None
        for label, at in steps:
            gap = "" if previous is None else f" (+{(at - previous).total_seconds() * 1000:.0f} ms)"
            parts.append(f"{label} {ist_ms(at)[11:]}{gap}")
            previous = at
        return " → ".join(parts)

    @admin.display(description="alert as received (secret redacted)")
    def alert_body(self, obj):
        import json

        return format_html("<pre>{}</pre>", json.dumps(obj.alert.payload, indent=2, default=str))

    def changelist_view(self, request, extra_context=None):
        if not request.GET and request.method == "GET":
            # Default: today's orders (IST), as a trader opens the blotter.
            start = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
            return HttpResponseRedirect(f"{request.path}?created_at__gte={start:%Y-%m-%d}+00%3A00%3A00%2B05%3A30")
        response = super().changelist_view(request, extra_context)
        cl = getattr(response, "context_data", {}).get("cl")
        if cl is not None:
            # One scan of the filtered rows for both rows of counts.
            by_status, by_family = Counter(), Counter()
            for status, family, n in (cl.queryset.order_by().values_list("status", "tag_family")
                                      .annotate(n=Count("id"))):
                by_status[status] += n
                if family:
                    by_family[family] += n
            response.context_data["status_counts"] = sorted(by_status.items())
            response.context_data["family_counts"] = by_family.most_common()
        return response

    def has_cancel_permission(self, request) -> bool:
        return request.user.has_perm("orders.cancel_order")

    @admin.action(description="Cancel the selected orders", permissions=["cancel"])
    def cancel_orders(self, request, queryset):
        acted = cancels.cancel_each(queryset, f"admin:{request.user.get_username()}"[:64])
        outcomes, ended = Counter(outcome for _, outcome in acted), queryset.count() - len(acted)
        said = {cancels.CANCELLED: "cancelled before they were sent", cancels.REQUESTED: "sent to the broker",
                cancels.WAITING: "to be sent once the broker's id is known"}
        parts = [f"{n} {said[outcome]}" for outcome, n in outcomes.items()] + (
            [f"{ended} had already ended"] if ended else [])
        self.message_user(request, "Cancel: " + "; ".join(parts or ["nothing selected"]), messages.SUCCESS)

    @admin.action(description="Export the selected orders as CSV")
    def export_csv(self, request, queryset):
        return csv_response(queryset.order_by("-id"))


@admin.register(OrderEvent)
class OrderEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "order", "kind", "from_status", "to_status", "tag", "actor"]
    list_filter = ["kind", "to_status", "actor"]
    search_fields = ["=order__command_id", "tag"]
    list_select_related = ["order"]
    show_full_result_count = False


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "strategy", "alert_id", "source", "actor", "sender_ip"]
    list_filter = ["source", "strategy"]
    search_fields = ["=alert_id"]


@admin.register(RejectedAlert)
class RejectedAlertAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "status_code", "count", "strategy_name", "sender_ip", "reason", "last_at"]
    list_filter = ["status_code"]
    search_fields = ["=sender_ip", "strategy_name"]


@admin.register(WatcherLease)
class WatcherLeaseAdmin(ReadOnlyAdmin):
    list_display = ["name", "owner", "expires_at", "last_pass_at"]


@admin.register(OrderFeedState)
class OrderFeedStateAdmin(ReadOnlyAdmin):
    """The broker's push feed: connected since when, its last message, reconnects today."""

    list_display = ["broker", "connection", "holder", "connected_since", "last_message_at", "last_seen_at",
                    "reconnects_today", "last_error"]

    @admin.display(description="connection")
    def connection(self, state):
        healthy = feedstate.state().get("healthy")
        return "healthy" if healthy else ("connected, quiet" if state.connected_since else "down (polling)")


@admin.register(Strategy)
class StrategyAdmin(admin.ModelAdmin):
    list_display = ["name", "enabled", "leg_policy", "block_duplicates", "allow_cross_strategy", "allowed_ips",
                    "created_at"]
    list_filter = ["enabled", "leg_policy"]
    fieldsets = [
        (None, {"fields": ["name", "enabled", "leg_policy", "block_duplicates", "allow_cross_strategy",
                           "split_above_freeze", "allowed_ips"]}),
        ("Strategy rules (GUARD_BLOCKED:)", {"fields": [
            "allowed_exchanges", "symbol_patterns", "allowed_products", "allowed_order_types",
            ("window_start", "window_end"), "trading_days", "exits_outside_window"]}),
        ("Trading-day operations", {"fields": ["squareoff_time", "market_protection_pct", "check_funds"]}),
    ]
    actions = ["allow_only_tradingview"]

    @admin.action(description="Accept alerts only from TradingView's sender addresses", permissions=["change"])
    def allow_only_tradingview(self, request, queryset):
        preset = ", ".join(TRADINGVIEW_SENDER_IPS)
        for strategy in queryset:
            strategy.allowed_ips = preset
            strategy.save(update_fields=["allowed_ips"])
        self.message_user(request, f"{queryset.count()} strategies now accept alerts only from {preset}.")

    def get_readonly_fields(self, request, obj=None):
        return ["name"] if obj else []

    def has_delete_permission(self, request, obj=None):
        return False  # its orders keep pointing at it

    def save_model(self, request, obj, form, change):
        if not change:
            secret = obj.set_secret()
            messages.warning(request, f"Webhook secret for {obj.name} (shown once, stored only as a digest): {secret}")
        super().save_model(request, obj, form, change)


@admin.register(Position)
class PositionAdmin(ReadOnlyAdmin):
    list_display = ["strategy", "exchange", "symbol", "product", "net_qty", "avg_price", "last_price", "unrealized",
                    "realized_pnl", "updated_at"]
    list_filter = ["strategy", "exchange", "product"]
    list_select_related = ["strategy"]
    search_fields = ["symbol"]

    actions = ["square_off"]

    def get_queryset(self, request):
        return positions_with_prices(super().get_queryset(request))

    def has_square_off_permission(self, request) -> bool:
        return request.user.has_perm("orders.place_manual_order")

    @admin.action(description="Square off the selected positions (cancel their open orders, then exit)",
                  permissions=["square_off"])
    def square_off(self, request, queryset):
        actor = f"admin:{request.user.get_username()}"[:64]
        exits, waiting = [], 0
        for position in queryset.select_related("strategy"):
            result = squareoff.close(strategy=position.strategy.name, exchange=position.exchange,
                                     symbol=position.symbol, actor=actor)
            exits += result.orders
            waiting += len(result.waiting)
        said = [f"{o.side} {o.qty} {o.symbol} {o.status}{f' {o.tag}' if o.tag else ''}" for o in exits]
        self.message_user(request, "Square-off: " + ("; ".join(said) or "nothing was open") + (
            f"; {waiting} waiting for their cancels" if waiting else ""), messages.SUCCESS)

    @admin.display(description="last price", ordering="last_price")
    def last_price(self, obj):
        return obj.last_price if obj.last_price is not None else "-"

    @admin.display(description="unrealised P&L", ordering="unrealized_pnl")
    def unrealized(self, obj):
        return f"{obj.unrealized_pnl:.2f}" if obj.unrealized_pnl is not None else "-"

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        cl = getattr(response, "context_data", {}).get("cl")
        if cl is not None:
            response.context_data["totals"] = position_totals(cl.queryset)
        return response


@admin.register(BrokerFunds)
class BrokerFundsAdmin(ReadOnlyAdmin):
    list_display = ["broker", "cash", "payin", "margin_used", "collateral", "available_cash", "taken_at"]


@admin.register(BrokerPosition)
class BrokerPositionAdmin(ReadOnlyAdmin):
    list_display = ["exchange", "symbol", "product", "net_qty", "net_avg_price", "realized_pnl", "unrealized_pnl",
                    "last_price", "taken_at"]
    search_fields = ["symbol"]


class DeliveryFilter(admin.SimpleListFilter):
    title = "delivery"
    parameter_name = "delivery"

    def lookups(self, request, model_admin):
        return [("unsent", "not delivered yet"), ("given_up", "given up"), ("sent", "sent")]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "unsent":
            return queryset.filter(sent_at__isnull=True, gave_up_at__isnull=True)
        if value == "given_up":
            return queryset.filter(gave_up_at__isnull=False)
        if value == "sent":
            return queryset.filter(sent_at__isnull=False)
        return queryset


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "text", "count", "priority", "sent_at", "attempts", "next_attempt_at",
                    "last_error", "gave_up_at"]
    list_filter = [DeliveryFilter, "priority"]
    search_fields = ["text"]
    show_full_result_count = False


@admin.register(SquareOff)
class SquareOffAdmin(ReadOnlyAdmin):
    """Every square-off request, per position: who or what asked, and what became of it."""

    list_display = ["requested_at", "strategy", "exchange", "symbol", "product", "trigger", "actor", "done_at",
                    "exit_order", "note"]
    list_filter = ["trigger", "strategy"]
    list_select_related = ["strategy", "exit_order"]
    search_fields = ["symbol", "alert_id"]


@admin.register(SquareOffDay)
class SquareOffDayAdmin(ReadOnlyAdmin):
    list_display = ["day", "strategy", "trigger", "at", "detail"]
    list_filter = ["trigger"]


@admin.register(TargetFollowUp)
class TargetFollowUpAdmin(ReadOnlyAdmin):
    """The entries that follow a flip's exit (target positions), waiting or done."""

    list_display = ["created_at", "strategy", "exchange", "symbol", "side", "qty", "after", "status", "entry", "note"]
    list_filter = ["status", "strategy"]
    list_select_related = ["strategy", "after", "entry"]
    actions = ["cancel_follow_ups"]

    def has_cancel_permission(self, request) -> bool:
        return request.user.has_perm("orders.cancel_order")

    @admin.action(description="Cancel the selected waiting follow-up entries", permissions=["cancel"])
    def cancel_follow_ups(self, request, queryset):
        cancelled = targets.cancel(queryset, f"admin:{request.user.get_username()}")
        self.message_user(request, f"{cancelled} follow-up entries cancelled", messages.SUCCESS)


@admin.register(ExternalOrder)
class ExternalOrderAdmin(ReadOnlyAdmin):
    """Orders at the broker that we did not send (placed in the broker's app, say): followed,
    never touched; their own bucket of the P&L and of the reconciliation."""

    list_display = ["first_seen_at", "broker_order_id", "exchange", "symbol", "side", "qty", "product", "order_type",
                    "price", "status", "filled_qty", "avg_price", "reason", "updated_at"]
    list_filter = ["status", "side", "product"]
    search_fields = ["symbol", "broker_order_id", "client_order_id"]


@admin.register(Reconciliation)
class ReconciliationAdmin(ReadOnlyAdmin):
    list_display = ["at", "instruments", "differences", "external_orders"]


@admin.register(PositionDifference)
class PositionDifferenceAdmin(ReadOnlyAdmin):
    list_display = ["first_seen_at", "exchange", "symbol", "product", "broker_qty", "ours_qty", "external_qty",
                    "difference", "confirmed_at", "last_seen_at", "resolved_at"]
    list_filter = [("resolved_at", admin.EmptyFieldListFilter)]
    search_fields = ["symbol"]


@admin.register(AuditCheck)
class AuditCheckAdmin(ReadOnlyAdmin):
    """Each run of verify_audit (manage.py or the nightly schedule) and the mismatches it found."""

    list_display = ["ran_at", "orders", "positions", "mismatches", "since"]
    readonly_fields = ["ran_at", "since", "orders", "positions", "mismatches", "report"]
