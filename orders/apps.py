from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import cancels, notify  # noqa: F401 - connect their subscribers to orders.events
