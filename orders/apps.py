from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Connect their subscribers: to orders.events, and (squareoff) to a strategy's save.
        from . import cancels, notify, squareoff  # noqa: F401
