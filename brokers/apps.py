from django.apps import AppConfig


class BrokersConfig(AppConfig):
    name = "brokers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.conf import settings
        from django.utils.module_loading import import_string

        from . import checks  # noqa: F401 - registers the broker settings' system check
        from .registry import BROKERS

        # The configured broker's module, imported in the parent process: django-q2's workers
        # are forked from it, and a worker recycled every 500 tasks imported it anew (py-spy
        # under benchmarks/flow.py: 3 % of the queue's time where no bytecode is cached).
        if settings.ORDERDESK_BROKER in BROKERS:
            import_string(BROKERS[settings.ORDERDESK_BROKER])
