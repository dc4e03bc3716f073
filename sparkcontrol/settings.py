"""Settings for Spark Control, read from environment variables and an optional `.env` file.

Safe defaults give the embedded mode: SQLite in the data directory, an in-memory channel layer and the
task worker inside the serving process. `DATABASE_URL` and `REDIS_URL` switch to the scaled-out mode.
Every variable is documented in `.env.example`.
"""

from __future__ import annotations

import logging
import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from dotenv import load_dotenv

from sparkcontrol.env import env_bool, env_float, env_int, env_list, env_paths, env_seconds_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
load_dotenv(os.environ.get("SPARKCONTROL_ENV_FILE", BASE_DIR / ".env"), override=False)
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
# Every probe and readiness check is an HTTP request; only their failures belong in the log.
for _noisy in ("httpx", "httpcore", "paramiko.transport"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

DATA_DIR = Path(env_str("SPARKCONTROL_DATA_DIR", str(BASE_DIR / "data"))).expanduser().resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """The key from the environment, else one generated on first run and kept in the data directory."""
    from_env = env_str("SPARKCONTROL_SECRET_KEY")
    if from_env:
        return from_env
    path = DATA_DIR / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("SPARKCONTROL_DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "ninja",  # its bundled Swagger UI for /api/docs (no CDN, no inline script)
    "django_tasks",
    "django_tasks_db",
    "axes",  # failed sign-ins counted per user and address, lockouts in the admin (see docs/decisions)
    "sparkcontrol",
    "accounts",
    "audit",
    "realtime",
    "actions",  # before coordination: its `schedule` command extends coordination's
    "catalog",
    "cluster",
    "swaps",
    "coordination",
    "gateway",
    "telemetry",
    "modelfiles",
]

MIDDLEWARE = [
    "sparkcontrol.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "sparkcontrol.middleware.ContentSecurityPolicyMiddleware",
    "sparkcontrol.middleware.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "sparkcontrol.urls"
ASGI_APPLICATION = "sparkcontrol.asgi.application"
WSGI_APPLICATION = "sparkcontrol.wsgi.application"

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

# --- database -------------------------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
SQLITE_CACHED_STATEMENTS = 16
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
else:
    # WAL lets readers run beside the writer; IMMEDIATE takes the write lock at BEGIN, so two writers queue
    # on the busy timeout instead of one failing later with "database is locked" on lock upgrade. Each serving
    # thread keeps its connection (sparkcontrol/serving.py), so SQLite's page cache is per thread: 512 KiB each
    # instead of the default 2 MiB keeps a large swap history from growing the process (the OS caches the file).
    # Each connection also keeps its most recent prepared statements, ~18 KiB each: with Python's default of 128
    # the long-lived threads' connections (task workers, housekeeping) grew the process by 1.5 MiB over the bench's
    # run. 16 still holds every hot path's few statements; preparing a statement again costs ~16 µs.
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "sparkcontrol.sqlite3",
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "cached_statements": SQLITE_CACHED_STATEMENTS,
                "init_command": (
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000; "
                    "PRAGMA cache_size=-512;"
                ),
            },
            # Tests use a file too: an in-memory shared-cache database fails concurrent writers at once
            # ("database table is locked") instead of queueing them as the real file does.
            "TEST": {"NAME": str(DATA_DIR / f"test_sparkcontrol_{os.getpid()}.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- channels and tasks ---------------------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "realtime.layers.SharedMessageInMemoryChannelLayer"}}

# "swaps": the swap runner alone, so a swap never waits behind other tasks; "webhooks": deliveries; "actions":
# scheduled actions; "downloads": model downloads; "services": service restarts (minutes each); "default": the rest
# (probe sweeps, load samples). The embedded worker runs a thread per queue; scaled out, give "swaps" a db_worker of
# its own.
TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": ["default", "webhooks", "swaps", "actions", "downloads", "services"],
    }
}

# The periodic probe sweeps run every few seconds: their task start/end lines are DEBUG, not INFO.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"routine_tasks": {"()": "sparkcontrol.logfilters.RoutineTasksAtDebug"}},
    "loggers": {
        "django_tasks": {"filters": ["routine_tasks"]},
        # autobahn says at every start that its native helpers are off (sparkcontrol/__init__.py turns them off).
        "autobahn.websocket": {"level": "WARNING"},
    },
}

# --- auth, sessions, security ---------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Sign-in throttle (django-axes), on both sign-in pages: after LOGIN_FAILURE_LIMIT wrong passwords for one
# username from one address, that pair is refused (429) for LOGIN_LOCKOUT_MINUTES, even with the right password.
# Keyed on the pair so nobody can lock the admin out from elsewhere. A lockout is in the admin (Axes) and audited.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("SPARKCONTROL_LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = timedelta(
    minutes=env_float("SPARKCONTROL_LOGIN_LOCKOUT_MINUTES", 15.0, minimum=0.1, maximum=10080.0)
)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # a refused attempt is not counted (nor hashed)
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_TEMPLATE = "dashboard/locked_out.html"
AXES_VERBOSE = False
# Sign-in requests run on a few threads of their own (password hashing is slow on purpose), so a burst of them
# queues there and never takes the threads every other request needs (see sparkcontrol/serving.py).
LOGIN_THREADS = env_int("SPARKCONTROL_LOGIN_THREADS", 2, minimum=1, maximum=64)
# `serve` answers sync views with its own HTTP handler (sparkcontrol/serving.py, decision 0030), verified against
# the Django series it names; 0 serves with Django's own ASGI handler instead (slower, the same answers).
FAST_HANDLER = env_bool("SPARKCONTROL_FAST_HANDLER", True)
LOGIN_URL = "/admin/login/"
LOGIN_REDIRECT_URL = "/"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
# Production behind a TLS proxy sets these (see docs/OPERATIONS.md).
SECURE_SSL_REDIRECT = env_bool("SPARKCONTROL_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env_bool("SPARKCONTROL_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("SPARKCONTROL_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
if env_bool("SPARKCONTROL_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Request bodies: the API takes small JSON documents.
API_MAX_BODY_BYTES = env_int("SPARKCONTROL_API_MAX_BODY_BYTES", 256 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
# Static files are served by WhiteNoise straight from the app directories: no collectstatic step is needed.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- Spark Control's own settings (initial values; the topology ones live in the database afterwards) ---------
SPARKCONTROL = {
    "VLLM_PORT": env_int("VLLM_PORT", 8888, minimum=1, maximum=65535),
    "VLLM_CONTAINER": env_str("VLLM_CONTAINER", "vllm_node"),
    "DISABLED_SERVICES": env_list("DISABLED_SERVICES"),
    "LOCAL_MODEL_ROOTS": env_paths("LOCAL_MODEL_ROOTS", ["/models"]),
    "SERVICES_OVERRIDES": env_str("SERVICES_OVERRIDES", str(DATA_DIR / "services-overrides.yaml")),
    "SSH_KEY": env_str("SPARKCONTROL_SSH_KEY", str(Path("~/.ssh/id_ed25519").expanduser())),
    "SWAP_TIMEOUT_SECONDS": env_int("SWAP_TIMEOUT_SECONDS", 1800, minimum=10),
    "WORKER_INTERVAL_SECONDS": env_float("SPARKCONTROL_WORKER_INTERVAL", 1.0, minimum=0.05),
    "HF_TOKEN": env_str("HF_TOKEN"),
    # Delays before each webhook delivery attempt (its length is the number of attempts); None: the default.
    "WEBHOOK_BACKOFF_SECONDS": env_seconds_list("SPARKCONTROL_WEBHOOK_BACKOFF"),
    # Webhooks to loopback and private (LAN) addresses; link-local (cloud metadata) ones are refused regardless.
    "WEBHOOK_ALLOW_PRIVATE": env_bool("SPARKCONTROL_WEBHOOK_ALLOW_PRIVATE", False),
    # A running swap whose worker has not beaten for this long is marked interrupted.
    "HEARTBEAT_STALE_SECONDS": env_int("SPARKCONTROL_HEARTBEAT_STALE_SECONDS", 30, minimum=2),
    # A queued swap no worker picked up within this long is marked interrupted.
    "QUEUED_STALE_SECONDS": env_int("SPARKCONTROL_QUEUED_STALE_SECONDS", 300, minimum=5),
    # Bearer token a Prometheus server sends to GET /metrics (read-scope API tokens work too); blank: tokens only.
    "METRICS_TOKEN": env_str("SPARKCONTROL_METRICS_TOKEN"),
    # How long a swap waits for the gateway's in-flight requests to the outgoing model to finish.
    "GATEWAY_DRAIN_SECONDS": env_float("SPARKCONTROL_GATEWAY_DRAIN_SECONDS", 30.0, minimum=0.0, maximum=3600.0),
    # Load over time (GET /api/load, the dashboard's charts): a sample of every Spark, vLLM and the gateway.
    "LOAD_SAMPLING": env_bool("SPARKCONTROL_LOAD_SAMPLING", True),
    "LOAD_SAMPLE_SECONDS": env_float("SPARKCONTROL_LOAD_SAMPLE_SECONDS", 10.0, minimum=1.0, maximum=3600.0),
    # How often a model download's progress is read from the nodes (du of the HF cache's blobs).
    "DOWNLOAD_POLL_SECONDS": env_float("SPARKCONTROL_DOWNLOAD_POLL_SECONDS", 2.0, minimum=0.1),
}

# The /v1 gateway (read by gateway/conf.py; per-service caps are `Service.max_in_flight`, edited in the admin).
_GATEWAY_CLIENT = env_str("SPARKCONTROL_GATEWAY_HTTP_CLIENT", "aiohttp").lower()
SPARKCONTROL_GATEWAY = {
    "OPEN": env_bool("SPARKCONTROL_GATEWAY_OPEN", False),
    "ON_DEMAND": env_bool("SPARKCONTROL_GATEWAY_ON_DEMAND", False),
    "HOLD_SECONDS": env_float("SPARKCONTROL_GATEWAY_HOLD_SECONDS", 300.0, minimum=0.0, maximum=86400.0),
    "QUEUE_SECONDS": env_float("SPARKCONTROL_GATEWAY_QUEUE_SECONDS", 30.0, minimum=0.0, maximum=3600.0),
    "QUEUE_SIZE": env_int("SPARKCONTROL_GATEWAY_QUEUE_SIZE", 64, minimum=0, maximum=100000),
    "RETRY_AFTER": env_int("SPARKCONTROL_GATEWAY_RETRY_AFTER", 5, minimum=1, maximum=3600),
    "MAX_JSON_BYTES": env_int("SPARKCONTROL_GATEWAY_MAX_JSON_BYTES", 8 * 1024 * 1024, minimum=1024),
    "MAX_AUDIO_BYTES": env_int("SPARKCONTROL_GATEWAY_MAX_AUDIO_BYTES", 25 * 1024 * 1024, minimum=1024),
    "CONNECT_TIMEOUT": env_float("SPARKCONTROL_GATEWAY_CONNECT_TIMEOUT", 5.0, minimum=0.1, maximum=600.0),
    "READ_TIMEOUT": env_float("SPARKCONTROL_GATEWAY_READ_TIMEOUT", 600.0, minimum=1.0, maximum=86400.0),
    "TICK_SECONDS": env_float("SPARKCONTROL_GATEWAY_TICK_SECONDS", 0.25, minimum=0.0, maximum=60.0),
    "HTTP_CLIENT": _GATEWAY_CLIENT if _GATEWAY_CLIENT in ("httpx", "aiohttp") else "aiohttp",
}

# Scheduled actions (actions/): how often the periodic tick looks for due occurrences (it also wakes at each
# action's next occurrence); how late an occurrence may start before it counts as missed (then the action's missed-run
# policy applies); the /v1 address a warm-up request is sent to (this process's own gateway); its time limit.
ACTIONS_TICK_SECONDS = env_float("SPARKCONTROL_ACTIONS_TICK_SECONDS", 30.0, minimum=0.5, maximum=3600.0)
ACTIONS_MISSED_AFTER_SECONDS = env_float("SPARKCONTROL_ACTIONS_MISSED_AFTER_SECONDS", 300.0, minimum=1.0)
ACTIONS_GATEWAY_URL = env_str("SPARKCONTROL_ACTIONS_GATEWAY_URL", "http://127.0.0.1:9999")
ACTIONS_WARM_TIMEOUT_SECONDS = env_float("SPARKCONTROL_ACTIONS_WARM_TIMEOUT_SECONDS", 300.0, minimum=1.0)

# --- service restarts and service pages (docs/decisions/0042) -------------------------------------------------------
# `docker restart --time N`: how long docker waits after SIGTERM before it kills the container.
SERVICE_RESTART_STOP_SECONDS = env_int("SPARKCONTROL_SERVICE_RESTART_STOP_SECONDS", 10, minimum=0, maximum=600)
# How long a restarted service may take to pass its probe again before the restart counts as failed.
SERVICE_RESTART_WAIT_SECONDS = env_float(
    "SPARKCONTROL_SERVICE_RESTART_WAIT_SECONDS", 300.0, minimum=1.0, maximum=3600.0
)
# How much probe history the service pages keep (status-sweep samples; pruned by each sweep).
SERVICE_HISTORY_HOURS = env_float("SPARKCONTROL_SERVICE_HISTORY_HOURS", 24.0, minimum=1.0, maximum=168.0)
# Says why a restart of a GPU service must wait (the swap lock is held), or None; the cluster app cannot import
# the lock's app, so the wiring names it here.
SERVICE_RESTART_LOCK_CHECK = "coordination.selectors.lock_refusal"
