"""The web server's entry point (gunicorn orderdesk.wsgi). Marks this process as a web process
before the settings load: only web processes use the bounded PostgreSQL connection pool."""

import os

os.environ.setdefault("ORDERDESK_PROCESS_ROLE", "web")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orderdesk.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402 - after the role is set

application = get_wsgi_application()
