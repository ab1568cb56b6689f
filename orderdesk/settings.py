"""Settings: everything comes from the environment, with safe local defaults.

DATABASE_URL  unset -> SQLite file db/orderdesk.sqlite3 (WAL, IMMEDIATE transactions);
              postgres://user:pass@host:port/name -> PostgreSQL.
REDIS_URL     unset -> django-q2 ORM broker (the queue lives in the database);
              set   -> django-q2 Redis broker.
"""

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from orderdesk.network import networks_setting
from orderdesk.secret_key import secret_key

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# Which kind of process loaded these settings: orderdesk/wsgi.py marks the web server's
# processes as "web" before Django starts; qcluster, orderwatcher and other commands are "worker".
PROCESS_ROLE = env_str("ORDERDESK_PROCESS_ROLE", "worker")
# Threads per web process: the gunicorn config exports the real figure to its workers.
WEB_THREADS = env_int("ORDERDESK_WEB_THREADS", 4)
SQLITE_DEFAULT = BASE_DIR / "db" / "orderdesk.sqlite3"


def database_from_url(url: str, role: str = "worker") -> dict:
    """dj-database-url's reading of DATABASE_URL (query options such as ?sslmode=require kept
    in OPTIONS), with what each back end needs on top."""
    if not url:
        SQLITE_DEFAULT.parent.mkdir(exist_ok=True)
        url = f"sqlite:///{SQLITE_DEFAULT}"
    try:
        db = dj_database_url.parse(url)
    except ValueError as exc:  # an unknown scheme, or a URL it cannot read
        raise ImproperlyConfigured(f"DATABASE_URL: {exc}") from None
    options = db.setdefault("OPTIONS", {})
    if db["ENGINE"] == "django.db.backends.sqlite3":
        options.update({
            # IMMEDIATE: a writer takes the lock when its transaction starts, so two writers
            # queue on the busy timeout instead of failing with "database is locked" later.
            # The busy timeout only matters for writers outside orderdesk.sqlite's queue.
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            # Checkpoints run in the watcher's pass (PASSIVE), not inside a request; this
            # is only the backstop.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=20000;",
        })
        # Django's back end with writers queued on a flock() instead of SQLite's 1..100 ms
        # busy-handler sleeps (measured reason in orderdesk/sqlite/base.py).
        db["ENGINE"] = "orderdesk.sqlite"
        db.update({
            # A new SQLite connection per request costs more than the intake's own queries.
            "CONN_MAX_AGE": 600,
            "CONN_HEALTH_CHECKS": True,
            "TEST": {"NAME": env_str("ORDERDESK_TEST_SQLITE", str(BASE_DIR / "db" / "test.sqlite3"))},
        })
    elif db["ENGINE"] == "django.db.backends.postgresql":
        db.update({"CONN_MAX_AGE": 60, "CONN_HEALTH_CHECKS": True,
                   "TEST": {"NAME": env_str("ORDERDESK_TEST_PG_NAME") or None}})
        if env_bool("ORDERDESK_DB_PREPARED", True):
            # Parameters bound by the server, and a statement prepared on its second run in a
            # connection: PostgreSQL then skips parsing and planning it. Measured by
            # benchmarks/pg_statements.py (2026-12-02): the server's CPU per intake, submission
            # and fill 0.46-0.56x, the client's 1.05-1.19x, their sum 0.88x. Off behind a
            # pooler that cannot keep prepared statements (PgBouncer in transaction mode before 1.21).
            options.setdefault("server_side_binding", True)
            options.setdefault("prepare_threshold", 2)
        if role == "web":
            # Bounded: a web process never holds more connections than it has threads, however
            # many requests arrive at once (runserver's thread per request exhausted
            # max_connections under a burst). Only here: a pool does not survive django-q2's
            # forks (django-q2 issue #209), so qcluster and orderwatcher keep one plain
            # connection per process. A pool needs CONN_MAX_AGE 0 (Django returns the
            # connection to the pool at the end of each request).
            db.update({"CONN_MAX_AGE": 0, "CONN_HEALTH_CHECKS": False})
            options["pool"] = {
                "min_size": 1,
                "max_size": env_int("ORDERDESK_DB_POOL_MAX", WEB_THREADS),
                "timeout": env_float("ORDERDESK_DB_POOL_TIMEOUT_S", 2),
            }
    else:
        raise ImproperlyConfigured(f"DATABASE_URL: {db['ENGINE']} is not supported (use sqlite:// or postgres://)")
    return db


SECRET_KEY = secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = [h.strip() for h in env_str("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()]

# --- behind a proxy, over HTTPS -----------------------------------------------------------
if "WEBHOOK_TRUST_X_FORWARDED_FOR" in os.environ:
    raise ImproperlyConfigured(
        "WEBHOOK_TRUST_X_FORWARDED_FOR was removed: it trusted the left-most X-Forwarded-For "
        "address, which any client can forge. Set TRUSTED_PROXIES to your proxy's addresses "
        "(comma-separated IPs or CIDRs) instead.")
# Requests from these addresses may say who the client was (X-Forwarded-For) and that it
# came over HTTPS (X-Forwarded-Proto); from anyone else both headers are ignored.
TRUSTED_PROXIES = networks_setting("TRUSTED_PROXIES", env_str("TRUSTED_PROXIES"))
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if TRUSTED_PROXIES else None
ORDERDESK_HTTPS = env_bool("ORDERDESK_HTTPS", False)
if ORDERDESK_HTTPS:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = True
    # Browser pages are redirected to HTTPS; the API never is (a redirected POST loses its
    # body): over plain HTTP it answers a JSON 403 (orderdesk.network.ApiHttpsOnlyMiddleware).
    SECURE_REDIRECT_EXEMPT = [r"^api/"]
    SECURE_HSTS_SECONDS = env_int("ORDERDESK_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
# security.W021 asks for SECURE_HSTS_PRELOAD: a browser preload list is a one-way commitment
# of the whole domain that its owner makes by submitting it, not a default a package may set.
SILENCED_SYSTEM_CHECKS = ["security.W021"]

INSTALLED_APPS = [
    "orderdesk.apps.DeskAdminConfig",  # django.contrib.admin, its index grouped for a trader
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "django_q",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here (no CDN)
    "axes",
    "orders",
    "brokers",
    "risk",
    "orderdesk.dashboard",
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

MIDDLEWARE = [
    # First: headers only our own proxies may set are dropped from anyone else.
    "orderdesk.network.TrustedProxyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "orderdesk.network.ApiHttpsOnlyMiddleware",
    # Static files (the admin's) straight from the web process, compressed, cached forever.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a login refused for a locked-out username + IP into the lockout answer.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: a locked-out pair never reaches the password check
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "orderdesk.urls"
WSGI_APPLICATION = "orderdesk.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": database_from_url(env_str("DATABASE_URL"), PROCESS_ROLE)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
USE_TZ = True
# Stored in UTC (USE_TZ); shown in IST: the admin, and the API's ISO 8601 times (+05:30).
TIME_ZONE = "Asia/Kolkata"
FORMAT_MODULE_PATH = ["orderdesk.formats"]
TRADING_TZ = "Asia/Kolkata"
USE_I18N = False

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "db" / "static"  # `manage.py up` collects into it on start
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "orderdesk API",
    "DESCRIPTION": "Webhook intake for TradingView and other alert senders, and the order API of the desk.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"OrderStatusEnum": "orders.models.Status",
                            "HealthStatusEnum": "orders.schema.HEALTH_STATUSES"},
}

# --- logins: django-axes ------------------------------------------------------------------
# A username + IP pair is locked after 5 failures for 15 minutes; by IP alone, one proxy in
# front of the desk would lock everybody out.
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "orderdesk.network.client_ip"
AXES_LOCKOUT_CALLABLE = "orderdesk.lockout.lockout_response"

# --- task queue -------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
Q_CLUSTER = {
    "name": env_str("ORDERDESK_Q_NAME", "orderdesk"),
    # I/O-bound work (a broker call waits for its round trip; on SQLite a move waits its turn
    # for the write lock), not tied to the cores: benchmarks/flow.py on 2 CPUs (2026-12-02,
    # two runs each) took 41 orders/s to the broker during a burst with 4 workers and 100
    # with 8, for 13 % fewer accepted alerts on SQLite and as many on PostgreSQL. The
    # OrderWatcher's queued fallback holds one worker for its whole slice.
    "workers": env_int("ORDERDESK_Q_WORKERS", 8),
    # A task is killed after 40 s (a watcher slice of ~20 s plus one pass at full broker
    # timeouts) and only redelivered after 80 s: timeout < retry, so never both at once.
    "timeout": env_int("ORDERDESK_Q_TIMEOUT", 40),
    "retry": env_int("ORDERDESK_Q_RETRY", 80),
    "max_attempts": 3,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": -1,  # the audit trail is OrderEvent; failed tasks are still kept
    "poll": 0.05,
    "label": "Task queue",
    "time_zone": "Asia/Kolkata",  # cron schedules (the 08:30 symbol master sync) are IST
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["broker_class"] = "orders.queue.DatabaseQueue"  # the ORM queue's hot statements, written once
    Q_CLUSTER["bulk"] = env_int("ORDERDESK_Q_BULK", Q_CLUSTER["workers"])


def redis_cache_url(queue_url: str, cache_url: str) -> str:
    """The cache's Redis URL: REDIS_CACHE_URL, else the queue's server on the next database.
    Never the queue's own database: the cache's clear() is a FLUSHDB."""
    def server_and_db(url):
        parts = urlsplit(url)
        db = parts.path.strip("/") or "0"
        if not db.isdigit():
            raise ImproperlyConfigured(f"{url!r}: the Redis database must be a number")
        return parts, int(db)

    queue, queue_db = server_and_db(queue_url)
    if not cache_url:
        cache_url = urlunsplit(queue._replace(path=f"/{queue_db + 1 if queue_db < 15 else queue_db - 1}"))
    cache, cache_db = server_and_db(cache_url)
    if (cache.hostname, cache.port, cache_db) == (queue.hostname, queue.port, queue_db):
        raise ImproperlyConfigured("REDIS_CACHE_URL must not be the task queue's Redis database (REDIS_URL): "
                                   "clearing the cache would empty the queue")
    return cache_url


# The webhook's rate limits count here: in Redis, shared by every process, when the queue is
# there; else in each process's memory (a limit per process).
if REDIS_URL:
    CACHES = {"default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": redis_cache_url(REDIS_URL, env_str("REDIS_CACHE_URL")),
        # A stalled Redis must not hold a webhook: the limits then count nothing (logged).
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                          "OPTIONS": {"MAX_ENTRIES": 100_000}}}  # the default 300 would cull live counters

# --- order pipeline -----------------------------------------------------------------------
ORDERDESK_BROKER = env_str("ORDERDESK_BROKER", "paper")
# The checks every intake runs, in order (dotted paths; the first verdict on a leg stands),
# and the check the claim's own UPDATE makes.
ORDERDESK_BLOCKERS = [p.strip() for p in env_str("ORDERDESK_BLOCKERS", ",".join([
    "risk.blockers.strategy_disabled",
    "risk.blockers.kill_switch",
    "risk.blockers.strategy_rules",
    "risk.blockers.instrument_checks",
    "risk.blockers.risk_limits",
    "risk.blockers.funds_check",
    "risk.blockers.execution_guard",
])).split(",") if p.strip()]
ORDERDESK_CLAIM_GUARD = env_str("ORDERDESK_CLAIM_GUARD", "risk.killswitch.claim_guard")
ORDERDESK_KILL_SWITCH_CONTROL = env_str("ORDERDESK_KILL_SWITCH_CONTROL", "risk.killswitch.set_mode")
ORDERDESK_EARLY_LOCKS = env_str("ORDERDESK_EARLY_LOCKS", "risk.blockers.lock_instruments_early")
ORDERDESK_MTM_CHECK = env_str("ORDERDESK_MTM_CHECK", "risk.mtm.strategies_to_square_off")
ORDERDESK_MODIFY_CHECK = env_str("ORDERDESK_MODIFY_CHECK", "risk.blockers.modification_check")
ALERT_MAX_AGE_S = env_float("ALERT_MAX_AGE_S", 60)  # an alert's sent_at older -> STALE_ALERT
RISK_SNAPSHOT_MAX_AGE_S = env_float("RISK_SNAPSHOT_MAX_AGE_S", 30)  # older prices -> PNL_UNKNOWN
ORDER_MAX_AGE_S = env_float("ORDER_MAX_AGE_S", 60)  # older at claim time -> STALE_ORDER
# A square-off waits at most this long for its instrument's cancels before it sends the exit.
SQUAREOFF_CANCEL_WAIT_S = env_float("SQUAREOFF_CANCEL_WAIT_S", 10)
# MARKET orders sent as LIMIT at the last price ± this % (empty: as MARKET; a strategy's own
# market_protection_pct wins); one still open after MARKET_PROTECTION_TIMEOUT_S is alerted.
MARKET_PROTECTION_PCT = env_float("MARKET_PROTECTION_PCT", 0) or None
MARKET_PROTECTION_TIMEOUT_S = env_float("MARKET_PROTECTION_TIMEOUT_S", 30)
FUNDS_INTERVAL_S = env_float("FUNDS_INTERVAL_S", 60)  # the watcher reads the broker's Limits this often
FUNDS_MAX_AGE_S = env_float("FUNDS_MAX_AGE_S", 180)  # older: check_funds strategies get FUNDS_UNKNOWN
WATCHER_INTERVAL_S = env_float("WATCHER_INTERVAL_S", 1)
WATCHER_SLICE_S = env_float("WATCHER_SLICE_S", 20)
# While the broker's push feed is healthy, the order-book read is a reconciliation this often.
WATCHER_RECONCILE_S = env_float("WATCHER_RECONCILE_S", 5)
ORDER_FEED = env_bool("ORDER_FEED", True)  # listen to the broker's push feed in manage.py orderwatcher
# A feed that showed no life (message, heartbeat reply) for this long counts as down: polling resumes.
ORDER_FEED_STALE_S = env_float("ORDER_FEED_STALE_S", 10)
PAPER_FEED_TICK_S = env_float("PAPER_FEED_TICK_S", 0.05)  # the paper feed advances due orders this often
# Longer than a slow pass (order book and positions at full broker timeouts), so a live
# watcher keeps its lease; a crashed one is replaced after this long.
WATCHER_LEASE_TTL_S = env_float("WATCHER_LEASE_TTL_S", 30)
RECONCILE_INTERVAL_S = env_float("RECONCILE_INTERVAL_S", 300)
AUDIT_VERIFY_DAYS = env_int("AUDIT_VERIFY_DAYS", 7)  # the nightly verify_audit's reach; 0: everything  # broker positions vs ours + external (orders.reconcile)
IN_DOUBT_GRACE_S = env_float("IN_DOUBT_GRACE_S", 60)
IN_DOUBT_MIN_READS = env_int("IN_DOUBT_MIN_READS", 3)
REQUEUE_CREATED_AFTER_S = env_float("REQUEUE_CREATED_AFTER_S", 10)
# Placements and cancels in any sliding second, across every worker; unset: the broker's
# default (8 for Shoonya, none for paper); 0: no limit.
BROKER_MAX_ORDERS_PER_S = env_int("BROKER_MAX_ORDERS_PER_S", -1)
BROKER_MAX_ORDERS_PER_S = None if BROKER_MAX_ORDERS_PER_S < 0 else BROKER_MAX_ORDERS_PER_S
BROKER_CONNECT_TIMEOUT_S = env_float("BROKER_CONNECT_TIMEOUT_S", 3)
BROKER_READ_TIMEOUT_S = env_float("BROKER_READ_TIMEOUT_S", 10)
PAPER_FILL_DELAY_S = env_float("PAPER_FILL_DELAY_S", 1)
PAPER_CASH = env_float("PAPER_CASH", 1_000_000)  # the paper account's cash, in rupees
WEBHOOK_MAX_BYTES = 64 * 1024
WEBHOOK_RETRY_AFTER_S = env_int("WEBHOOK_RETRY_AFTER_S", 5)  # the 503's Retry-After
# DRF rate strings: generous for real bursts, a stop for a runaway or hostile sender.
WEBHOOK_RATE_PER_IP = env_str("WEBHOOK_RATE_PER_IP", "6000/min")
WEBHOOK_RATE_PER_STRATEGY = env_str("WEBHOOK_RATE_PER_STRATEGY", "6000/min")
REJECTED_ALERTS_KEEP = env_int("REJECTED_ALERTS_KEEP", 100_000)  # rows; the watcher prunes the oldest
MAX_LEGS_PER_ALERT = 20
MAX_ORDER_QTY = env_int("MAX_ORDER_QTY", 1_000_000)
MAX_SLICES_PER_LEG = 20  # a leg split at the freeze quantity: more slices is GUARD_BLOCKED:TOO_MANY_SLICES

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "orderdesk": {"level": env_str("ORDERDESK_LOG_LEVEL", "INFO")},
        "django_q": {"level": "WARNING"},
    },
}

# --- Telegram (orders/notify.py): off while the token or the chat is unset
TELEGRAM_BOT_TOKEN = env_str("TELEGRAM_BOT_TOKEN")
TELEGRAM_CHAT_ID = env_str("TELEGRAM_CHAT_ID")
TELEGRAM_API_BASE = env_str("TELEGRAM_API_BASE", "https://api.telegram.org")
TELEGRAM_NOTIFY_EXECUTED = env_bool("TELEGRAM_NOTIFY_EXECUTED", False)
TELEGRAM_TIMEOUT_S = env_float("TELEGRAM_TIMEOUT_S", 3)
TELEGRAM_MAX_ATTEMPTS = env_int("TELEGRAM_MAX_ATTEMPTS", 8)
TELEGRAM_COMMANDS = env_bool("TELEGRAM_COMMANDS", False)  # read /status, /halt … in manage.py orderwatcher
# In a group chat, who may /halt, /reduce or /resume (Telegram user ids; empty: anyone in the chat).
TELEGRAM_ALLOWED_USER_IDS = [u.strip() for u in env_str("TELEGRAM_ALLOWED_USER_IDS").split(",") if u.strip()]

# --- Shoonya
# The live broker (ORDERDESK_BROKER=shoonya), Noren OMS REST API. Credentials come only from
# the environment; the session they buy is stored in the database (brokers.BrokerSession).
# OAuth: SHOONYA_CLIENT_ID + SHOONYA_SECRET, then `manage.py shoonya_login`. Legacy QuickAuth:
# the password / TOTP / vendor code / API key / IMEI set, and workers log in by themselves.
SHOONYA_BASE_URL = env_str("SHOONYA_BASE_URL", "https://api.shoonya.com/NorenWClientAPI")
SHOONYA_OAUTH_URL = env_str("SHOONYA_OAUTH_URL", "https://trade.shoonya.com/OAuthlogin/investor-entry-level/login")
SHOONYA_USER_ID = env_str("SHOONYA_USER_ID")
SHOONYA_ACCOUNT_ID = env_str("SHOONYA_ACCOUNT_ID") or SHOONYA_USER_ID
SHOONYA_CLIENT_ID = env_str("SHOONYA_CLIENT_ID")
SHOONYA_SECRET = env_str("SHOONYA_SECRET")
SHOONYA_PASSWORD = env_str("SHOONYA_PASSWORD")
SHOONYA_TOTP_SECRET = env_str("SHOONYA_TOTP_SECRET")
SHOONYA_VENDOR_CODE = env_str("SHOONYA_VENDOR_CODE")
SHOONYA_API_KEY = env_str("SHOONYA_API_KEY")
SHOONYA_IMEI = env_str("SHOONYA_IMEI")
SHOONYA_ALGO_ID = env_str("SHOONYA_ALGO_ID")  # the exchange's algo id, sent as `algo_id` when set
SHOONYA_WS_URL = env_str("SHOONYA_WS_URL", "wss://api.shoonya.com/NorenWSAPI/")
# The daily symbol masters: <SHOONYA_MASTER_URL>/<EXCH>_symbols.txt.zip (public, no login).
SHOONYA_MASTER_URL = env_str("SHOONYA_MASTER_URL", "https://api.shoonya.com")
# What the 08:30 IST schedule syncs (comma-separated; empty: no daily sync).
INSTRUMENT_EXCHANGES = [e.strip().upper() for e in env_str("INSTRUMENT_EXCHANGES", "NSE,NFO,BSE,BFO,MCX,CDS").split(",")
                        if e.strip()]
SHOONYA_WS_HEARTBEAT_S = env_float("SHOONYA_WS_HEARTBEAT_S", 3)  # as the official client: ping {"t":"h"}
SHOONYA_WS_LOGIN_TIMEOUT_S = env_float("SHOONYA_WS_LOGIN_TIMEOUT_S", 5)  # no ack by then: close, retry
# After a failed automatic login, wait this long before the next one (wrong credentials
# retried every second would lock the account).
SHOONYA_LOGIN_RETRY_S = env_float("SHOONYA_LOGIN_RETRY_S", 60)
