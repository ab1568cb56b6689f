from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import views
from .health_views import HealthView

urlpatterns = [
    path("webhook/", views.WebhookView.as_view(), name="webhook"),
    # A webhook URL typed without the slash must not meet APPEND_SLASH's redirect: a client
    # following it would lose the POST body (and the alert) on the way.
    path("webhook", views.WebhookNoSlashView.as_view()),
    path("webhook/explain/", views.ExplainView.as_view(), name="webhook-explain"),
    path("orders/", views.OrderListView.as_view(), name="order-list"),
    # Before orders/<command_id>/, which would take "cancel-all" for a command id.
    path("orders/cancel-all/", views.OrderCancelAllView.as_view(), name="order-cancel-all"),
    # Command ids are hex: anything else (a NUL, which PostgreSQL refuses in a query) is a 404.
    path("orders/<slug:command_id>/", views.OrderDetailView.as_view(), name="order-detail"),
    path("orders/<slug:command_id>/cancel/", views.OrderCancelView.as_view(), name="order-cancel"),
    path("orders/<slug:command_id>/modify/", views.OrderModifyView.as_view(), name="order-modify"),
    path("instruments/", views.InstrumentListView.as_view(), name="instrument-list"),
    path("positions/close/", views.ClosePositionsView.as_view(), name="positions-close"),
    path("external-orders/", views.ExternalOrderListView.as_view(), name="external-order-list"),
    path("reconciliation/", views.ReconciliationView.as_view(), name="reconciliation"),
    path("health/", HealthView.as_view(), name="health"),
    path("token/", views.TokenView.as_view(), name="token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]
