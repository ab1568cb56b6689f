"""The blotter: every order, its tag and its whole audit trail, read-only."""

from django.contrib import admin, messages
from django.utils import timezone

from .export import csv_response

from .models import (
    TRADINGVIEW_SENDER_IPS,
    Alert,
    BrokerPosition,
    Notification,
    Order,
    OrderEvent,
    Position,
    RejectedAlert,
    Strategy,
    WatcherLease,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class TagPartFilter(admin.SimpleListFilter):
    """The values the orders' tag_family / tag_code columns hold (indexed), and "none"."""

    field = ""

    def lookups(self, request, model_admin):
        values = (Order.objects.exclude(**{self.field: ""}).order_by(self.field)
                  .values_list(self.field, flat=True).distinct())
        return [(v, v) for v in values] + [("none", "no tag" if self.field == "tag_family" else "no code")]

    def queryset(self, request, queryset):
        if self.value() == "none":
            return queryset.filter(**{self.field: ""})
        if self.value():
            return queryset.filter(**{self.field: self.value()})
        return queryset


class TagFamilyFilter(TagPartFilter):
    title = parameter_name = field = "tag_family"


class TagCodeFilter(TagPartFilter):
    title = parameter_name = field = "tag_code"


def ist_ms(moment) -> str:
    """An audit time in IST to the millisecond."""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if moment else "-"


class OrderEventInline(admin.TabularInline):
    model = OrderEvent
    fields = ["at_ms", "kind", "from_status", "to_status", "tag", "actor", "detail"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["id"]

    @admin.display(description="at (IST)", ordering="at")
    def at_ms(self, obj):
        return ist_ms(obj.at)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "command_id", "strategy", "execution_type", "exchange", "symbol", "side", "qty",
                    "order_type", "status", "tag", "broker_order_id", "filled_qty", "avg_price"]
    list_filter = ["status", TagFamilyFilter, TagCodeFilter, "strategy", "execution_type", "source", "exchange",
                   ("created_at", admin.DateFieldListFilter)]
    search_fields = ["=command_id", "=broker_order_id", "symbol", "alert__alert_id"]
    list_select_related = ["strategy"]
    date_hierarchy = "created_at"
    inlines = [OrderEventInline]
    show_full_result_count = False
    actions = ["export_csv"]

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


@admin.register(Strategy)
class StrategyAdmin(admin.ModelAdmin):
    list_display = ["name", "enabled", "leg_policy", "block_duplicates", "allow_cross_strategy", "allowed_ips",
                    "created_at"]
    list_filter = ["enabled", "leg_policy"]
    fieldsets = [
        (None, {"fields": ["name", "enabled", "leg_policy", "block_duplicates", "allow_cross_strategy",
                           "allowed_ips"]}),
        ("Strategy rules (GUARD_BLOCKED:)", {"fields": [
            "allowed_exchanges", "symbol_patterns", "allowed_products", "allowed_order_types",
            ("window_start", "window_end"), "trading_days", "exits_outside_window"]}),
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
    list_display = ["strategy", "exchange", "symbol", "product", "net_qty", "avg_price", "realized_pnl", "updated_at"]
    list_filter = ["strategy", "exchange", "product"]
    search_fields = ["symbol"]


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
