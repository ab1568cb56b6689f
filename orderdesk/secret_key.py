"""SECRET_KEY: from the environment, else the file db/secret_key, which only `manage.py up`
creates (once, mode 0600, before the settings load) so that the demo works out of the box and
every later process of the same checkout reads the same key. No committed default: a
process with neither stops, naming SECRET_KEY."""

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

SECRET_KEY_FILE = Path(__file__).resolve().parent.parent / "db" / "secret_key"


def secret_key() -> str:
    key = os.environ.get("SECRET_KEY", "").strip()
    if key:
        return key
    try:
        key = SECRET_KEY_FILE.read_text().strip()
    except FileNotFoundError:
        key = ""
    if not key:
        raise ImproperlyConfigured(
            f"SECRET_KEY is not set: export SECRET_KEY, or run `manage.py up` once, which creates {SECRET_KEY_FILE}"
        )
    return key


def ensure_secret_key_file() -> None:
    """Create db/secret_key unless SECRET_KEY is set or the file exists. O_EXCL: of two
    processes starting at once, one writes it and the other keeps it."""
    if os.environ.get("SECRET_KEY", "").strip() or SECRET_KEY_FILE.exists():
        return
    SECRET_KEY_FILE.parent.mkdir(exist_ok=True)
    try:
        fd = os.open(SECRET_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(50) + "\n")
