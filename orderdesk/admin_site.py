"""The admin's index grouped for a trader: Trading, Risk, Broker, then System (Django's and
django-q2's internals), instead of one box per Django app."""

from django.contrib import admin
from django.db.models import Max
from django.template.response import TemplateResponse
from django.urls import path

SECTIONS = {
    "Trading": ["orders.order", "orders.orderevent", "orders.alert", "orders.rejectedalert", "orders.position",
                "orders.fill", "orders.externalorder", "orders.strategy", "orders.notification", "orders.auditcheck"],
    "Risk": ["risk.killswitch", "risk.killswitchchange", "risk.risklimits", "risk.risklock", "risk.marketholiday"],
    "Broker": ["orders.orderfeedstate", "orders.brokerposition", "orders.positiondifference", "orders.reconciliation",
               "brokers.brokersession", "brokers.paperinstrument", "brokers.paperorder"],
}
SYSTEM = "System"


class DeskAdminSite(admin.AdminSite):
    site_header = "orderdesk blotter"
    site_title = "orderdesk"
    index_title = "Orders, alerts and the audit trail"

    def get_urls(self):
        return [path("reconciliation/", self.admin_view(self.reconciliation_view), name="reconciliation"),
                *super().get_urls()]

    def reconciliation_view(self, request):
        from orders import reconcile
        from orders.models import BrokerPosition

        context = {**self.each_context(request), "title": "Reconciliation", **reconcile.view(),
                   "taken_at": BrokerPosition.objects.aggregate(at=Max("taken_at"))["at"]}
        return TemplateResponse(request, "admin/reconciliation.html", context)

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        if app_label is not None:
            return apps  # an app's own page stays as Django builds it
        models = {f"{app['app_label']}.{m['object_name'].lower()}": m for app in apps for m in app["models"]}
        grouped = []
        for section, keys in SECTIONS.items():
            found = [models.pop(key) for key in keys if key in models]
            if found:
                grouped.append(self._section(section, found))
        if models:
            grouped.append(self._section(SYSTEM, sorted(models.values(), key=lambda m: m["name"])))
        return grouped

    @staticmethod
    def _section(name: str, models: list[dict]) -> dict:
        return {"name": name, "app_label": name.lower(), "app_url": models[0]["admin_url"], "has_module_perms": True,
                "models": models}
