"""What both settings modules share: the configuration from `DJOP_CONFIG`, and Django's core settings.

The settings modules star-import the Django settings below (`__all__`), Django reads them from
there; the other names (`CONFIG`, `PORT`, ...) are imported by name.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

#: Django's settings, the same in both settings modules (`from ... common import *`).
__all__ = [
    "ALLOWED_HOSTS",
    "CSRF_COOKIE_NAME",
    "DATABASES",
    "DEBUG",
    "DEFAULT_AUTO_FIELD",
    "LOGGING",
    "LOGIN_URL",
    "MIDDLEWARE",
    "PASSWORD_HASHERS",
    "SECRET_KEY",
    "SESSION_COOKIE_NAME",
    "TEMPLATES",
    "TIME_ZONE",
    "USE_TZ",
]

CONFIG: dict[str, Any] = json.loads(os.environ["DJOP_CONFIG"])
PORT: int = int(CONFIG["port"])
ORIGIN = f"http://127.0.0.1:{PORT}"
ACCESS_TOKEN_TTL: int = int(CONFIG.get("access_token_ttl", 3600))
ID_TOKEN_TTL: int = int(CONFIG.get("id_token_ttl", 600))

#: The provider's one signing key, new at every start (a private key in PEM, as both packages take it).
RSA_PRIVATE_KEY_PEM = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    .decode("ascii")
)

_HERE = Path(__file__).resolve().parent

SECRET_KEY = secrets.token_urlsafe(50)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(Path(CONFIG["data_dir"]) / "db.sqlite3")}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
CORE_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions"]
MIDDLEWARE = [
    "tests.support.django_op.log.RequestLog",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [str(_HERE / "templates")],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]
LOGIN_URL = "/accounts/login/"
# The app under test runs on another port of 127.0.0.1, and cookies know no ports: names of our own
# keep the two (and panva's provider) from overwriting each other's cookies in one browser.
SESSION_COOKIE_NAME = f"djop_{CONFIG['kind']}_session"
CSRF_COOKIE_NAME = f"djop_{CONFIG['kind']}_csrf"
# Django's test hasher: PBKDF2's million rounds would cost a second per login and per client
# secret check (django-oauth-toolkit hashes client secrets too).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    # 4xx answers are the tests' business (and the log sync's 404s); tracebacks of 500s still show.
    "loggers": {"django.request": {"level": "ERROR"}},
}
