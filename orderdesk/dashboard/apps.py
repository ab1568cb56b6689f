from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The trader's page at /: manual orders, the live blotter, positions and P&L, controls."""

    name = "orderdesk.dashboard"
    label = "dashboard"
