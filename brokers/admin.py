from django.contrib import admin

from .models import BrokerSession, FreezeQuantity, Instrument, InstrumentMaster, PaperInstrument, PaperOrder


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the system writes: shown, never added or edited here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(PaperInstrument)
class PaperInstrumentAdmin(admin.ModelAdmin):
    list_display = ["exchange", "symbol", "ref_price", "enabled", "behaviour"]
    list_editable = ["ref_price", "enabled", "behaviour"]
    list_filter = ["exchange", "behaviour"]
    search_fields = ["symbol"]


@admin.register(PaperOrder)
class PaperOrderAdmin(ReadOnlyAdmin):
    list_display = ["placed_at", "broker_order_id", "client_order_id", "symbol", "side", "qty", "status",
                    "filled_qty", "avg_price", "reason"]
    list_filter = ["status", "behaviour"]
    search_fields = ["=broker_order_id", "=client_order_id", "symbol"]


@admin.register(BrokerSession)
class BrokerSessionAdmin(ReadOnlyAdmin):
    """The live broker's session, read-only and without its token: valid or not, since when,
    why it was invalidated or the last login failed."""

    list_display = ["broker", "user_id", "kind", "valid", "obtained_at", "invalidated_at", "login_failed_at", "note"]
    fields = list_display
    readonly_fields = list_display

    def get_queryset(self, request):
        return super().get_queryset(request).defer("token")

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Instrument)
class InstrumentAdmin(ReadOnlyAdmin):
    """The symbol master, as `manage.py sync_instruments` last loaded it."""

    list_display = ["exchange", "trading_symbol", "symbol", "instrument_type", "expiry", "strike", "option_type",
                    "lot_size", "tick_size", "freeze_qty", "token"]
    list_filter = ["exchange", "instrument_type", "option_type"]
    search_fields = ["trading_symbol", "symbol", "=token"]
    show_full_result_count = False  # a count of ~100,000 rows on every page is wasted work

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(InstrumentMaster)
class InstrumentMasterAdmin(ReadOnlyAdmin):
    list_display = ["exchange", "rows", "synced_at", "attempted_at", "error"]


@admin.register(FreezeQuantity)
class FreezeQuantityAdmin(admin.ModelAdmin):
    """Freeze quantities by underlying, for instruments whose master row has none."""

    list_display = ["exchange", "symbol", "freeze_qty", "updated_at"]
    list_editable = ["freeze_qty"]
    list_filter = ["exchange"]
    search_fields = ["symbol"]
