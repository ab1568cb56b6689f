from django.contrib import admin

from .models import PaperInstrument, PaperOrder


@admin.register(PaperInstrument)
class PaperInstrumentAdmin(admin.ModelAdmin):
    list_display = ["exchange", "symbol", "ref_price", "enabled", "behaviour"]
    list_editable = ["ref_price", "enabled", "behaviour"]
    list_filter = ["exchange", "behaviour"]
    search_fields = ["symbol"]


@admin.register(PaperOrder)
class PaperOrderAdmin(admin.ModelAdmin):
    list_display = ["placed_at", "broker_order_id", "client_order_id", "symbol", "side", "qty", "status",
                    "filled_qty", "avg_price", "reason"]
    list_filter = ["status", "behaviour"]
    search_fields = ["=broker_order_id", "=client_order_id", "symbol"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
