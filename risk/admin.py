from django.contrib import admin
from django.utils import timezone

from orders.admin import StrategyAdmin
from orders.models import Strategy

from .killswitch import set_mode
from .limits import live_state
from .models import KillSwitch, KillSwitchChange, MarketHoliday, RiskLimits, RiskLock
from .services import reset_lock


@admin.register(KillSwitch)
class KillSwitchAdmin(admin.ModelAdmin):
    list_display = ["__str__", "mode", "updated_by", "updated_at"]
    list_editable = ["mode"]
    list_display_links = ["__str__"]
    fields = ["strategy", "mode"]

    def get_readonly_fields(self, request, obj=None):
        return ["strategy"] if obj else []

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        # Through the service, so that every change is recorded with who and when.
        saved = set_mode(obj.mode, actor=f"admin:{request.user.get_username()}", strategy=obj.strategy)
        obj.pk, obj.is_global = saved.pk, saved.is_global


@admin.register(KillSwitchChange)
class KillSwitchChangeAdmin(admin.ModelAdmin):
    list_display = ["at", "strategy", "from_mode", "to_mode", "actor"]
    list_filter = ["to_mode", "strategy"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- risk limits, locks and holidays -----------------------------------------------------

class RiskLimitsInline(admin.StackedInline):
    """A strategy's limits on its own page, with what they are checked against now."""

    model = RiskLimits
    fk_name = "strategy"
    can_delete = False
    extra = 0
    max_num = 1
    fields = ["live_state", *RiskLimits.LIMIT_FIELDS[:3], "cooldown_after_losses", *RiskLimits.LIMIT_FIELDS[3:],
              "max_loss_since", "updated_by", "updated_at"]
    readonly_fields = ["live_state", "max_loss_since", "updated_by", "updated_at"]

    @admin.display(description="live state")
    def live_state(self, obj):
        return live_state(obj) if obj and obj.pk else "-"


admin.site.unregister(Strategy)


@admin.register(Strategy)
class StrategyWithRiskAdmin(StrategyAdmin):
    inlines = [RiskLimitsInline]

    def save_formset(self, request, form, formset, change):
        for limits in formset.save(commit=False):
            limits.updated_by, limits.updated_at = f"admin:{request.user.get_username()}"[:64], timezone.now()
            if "max_loss" in formset.forms[0].changed_data and limits.max_loss is not None:
                limits.max_loss_since = timezone.now()
            limits.save()


@admin.register(RiskLimits)
class RiskLimitsAdmin(admin.ModelAdmin):
    list_display = ["__str__", *RiskLimits.LIMIT_FIELDS, "updated_by", "updated_at"]
    readonly_fields = ["live_state", "max_loss_since", "updated_by", "updated_at"]
    fields = ["strategy", *RiskLimitsInline.fields]

    @admin.display(description="live state")
    def live_state(self, obj):
        return live_state(obj) if obj and obj.pk else "-"

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields + (["strategy"] if obj else [])

    def save_model(self, request, obj, form, change):
        obj.is_account = obj.strategy_id is None
        obj.updated_by, obj.updated_at = f"admin:{request.user.get_username()}"[:64], timezone.now()
        if "max_loss" in form.changed_data and obj.max_loss is not None:
            obj.max_loss_since = timezone.now()
        super().save_model(request, obj, form, change)


@admin.register(RiskLock)
class RiskLockAdmin(admin.ModelAdmin):
    list_display = ["created_at", "limits", "code", "tag", "reset_at", "reset_by"]
    list_filter = ["code", ("reset_at", admin.EmptyFieldListFilter)]
    readonly_fields = ["limits", "code", "tag", "detail", "created_at", "reset_at", "reset_by"]
    actions = ["reset_locks"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Reset the selected locks (entries allowed again; the max-loss count restarts)",
                  permissions=["change"])
    def reset_locks(self, request, queryset):
        actor = f"admin:{request.user.get_username()}"
        count = sum(reset_lock(None if lock.limits.is_account else lock.limits.strategy, actor=actor)
                    for lock in queryset.filter(reset_at__isnull=True).select_related("limits__strategy"))
        self.message_user(request, f"{count} lock(s) reset by {actor}.")


@admin.register(MarketHoliday)
class MarketHolidayAdmin(admin.ModelAdmin):
    list_display = ["date", "exchange", "description"]
    list_filter = ["exchange"]
    date_hierarchy = "date"
