"""gunicorn's configuration for orderdesk: `gunicorn -c python:orderdesk.gunicorn_conf orderdesk.wsgi`.

Sized for the machine: worker processes from the core count (the app is CPU-bound Python),
threads for the time a request waits on the database. Each web process uses at most as many
database connections as it has threads (the PostgreSQL pool, see orderdesk/settings.py), so
the whole web tier holds at most workers × threads. Never --preload: a database pool or
connection opened before the fork would be shared by the workers.
"""

import os

cores = os.cpu_count() or 1


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


bind = os.environ.get("ORDERDESK_WEB_BIND", "127.0.0.1:8000")
workers = _int("ORDERDESK_WEB_WORKERS", min(cores + 1, 8))
worker_class = "gthread"
threads = _int("ORDERDESK_WEB_THREADS", 4)
preload_app = False
keepalive = 5  # TradingView and scripts reuse connections; gunicorn sets TCP_NODELAY on them
timeout = 30
graceful_timeout = 10
backlog = 2048  # a burst waits in the accept queue, not in a thread of its own
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
errorlog = "-"
# gunicorn would itself believe X-Forwarded-Proto from 127.0.0.1 (forwarded_allow_ips); only
# Django decides, and only for TRUSTED_PROXIES (orderdesk.network.TrustedProxyMiddleware).
secure_scheme_headers: dict = {}
control_socket_disable = True  # unused; its default path is per user, so two servers would collide
wsgi_app = "orderdesk.wsgi:application"


def post_fork(server, worker):
    # The settings (loaded in the worker, after this) size the connection pool to the threads
    # this worker really runs, whatever the command line said.
    os.environ["ORDERDESK_WEB_THREADS"] = str(worker.cfg.threads)
    os.environ["ORDERDESK_PROCESS_ROLE"] = "web"


def post_worker_init(worker):
    """Warm the worker before it takes a request: a cold first request paid for importing the
    URLconf, DRF, the views and the admin and for the first database connection (1.6 s
    measured under `up`; TradingView gives up after 3 s). A GET of /api/health/ through the
    app itself does it all and writes nothing.

    The test client keeps its database connection open after the request (it disconnects
    close_old_connections for tests), so it is given back here: on PostgreSQL this thread,
    which serves no request, would otherwise keep one of the pool's connections for the
    worker's whole life, and with one thread (ORDERDESK_WEB_THREADS=1) every request then
    waited for the pool and answered 503."""
    from django.db import connections
    from django.test import Client

    try:
        response = Client(raise_request_exception=False).get("/api/health/", HTTP_HOST="localhost")
    except Exception:  # noqa: BLE001 - a worker that could not warm up still serves
        worker.log.exception("warm-up request failed")
        return
    finally:
        connections.close_all()
    worker.log.info("warmed up: GET /api/health/ %s", response.status_code)
