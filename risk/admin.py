from django.contrib import admin

from .killswitch import set_mode
from .models import KillSwitch, KillSwitchChange


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
