from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Connect their subscribers: to orders.events, and (squareoff) to a strategy's save.
        # The tasks too, in the parent process, which django-q2's workers are forked from
        # (see brokers.apps).
        from . import cancels, notify, squareoff, tasks  # noqa: F401
