from __future__ import annotations

import secrets

import pytest

from pkce_middleware import ConfigError, PKCEConfig

KEY = secrets.token_urlsafe(32)
BASE = {"PKCE_ISSUER": "https://op.example", "PKCE_CLIENT_ID": "app", "PKCE_SECRET_KEY": KEY}


def test_from_environ_reads_every_documented_variable() -> None:
    config = PKCEConfig.from_environ(
        {
            **BASE,
            "PKCE_CLIENT_SECRET": "s3cret",
            "PKCE_REDIRECT_URI": "https://app.example/oidc/cb",
            "PKCE_SCOPES": "profile offline_access",
            "PKCE_PUBLIC_PATHS": "/static, /health",
            "PKCE_COOKIE_SECURE": "false",
            "PKCE_LOGOUT_PATH": "/bye",
        }
    )
    assert config.issuer == "https://op.example"
    assert config.client_secret_value == "s3cret"
    assert config.callback_path == "/oidc/cb"
    assert config.scopes == ("openid", "profile", "offline_access")
    assert config.public_paths == ("/static", "/health")
    assert config.cookie_secure is False
    assert config.logout_path == "/bye"


def test_defaults_are_the_secure_ones() -> None:
    config = PKCEConfig.from_environ(BASE)
    assert config.cookie_secure is True
    assert config.client_secret is None
    assert config.scopes == ("openid", "profile", "email")
    assert config.callback_path is None
    assert "HS256" not in config.id_token_algorithms and "none" not in config.id_token_algorithms


@pytest.mark.parametrize("missing", ["PKCE_ISSUER", "PKCE_CLIENT_ID", "PKCE_SECRET_KEY"])
def test_missing_required_variable_is_named(missing: str) -> None:
    environ = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        PKCEConfig.from_environ(environ)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PKCE_ISSUER", "not a url"),
        ("PKCE_ISSUER", "http://op.example"),  # plain http only for loopback
        ("PKCE_REDIRECT_URI", "/relative/callback"),
        ("PKCE_REDIRECT_URI", "https://app.example/"),
        ("PKCE_LOGIN_PATH", "/auth/logout"),
        ("PKCE_PUBLIC_PATHS", "/static,/"),
        ("PKCE_SESSION_STORE", "memcached://x"),
        ("PKCE_SESSION_IDLE_TIMEOUT", "10"),
        ("PKCE_COOKIE_SECURE", "maybe"),
        ("PKCE_SESSION_MAX_AGE", "soon"),
        ("PKCE_SESSION_MAX_AGE", "5"),
        ("PKCE_LOGOUT_PATH", "logout"),
        ("PKCE_PUBLIC_PATHS", "//evil"),
        ("PKCE_ID_TOKEN_ALGORITHMS", "HS256"),
        ("PKCE_ID_TOKEN_ALGORITHMS", "none"),
        ("PKCE_TOKEN_ENDPOINT_AUTH_METHOD", "client_secret_jwt"),
        ("PKCE_TOKEN_ENDPOINT_AUTH_METHOD", "client_secret_basic"),  # without a client secret
        ("PKCE_HTTP_TIMEOUT", "0"),
        ("PKCE_CLOCK_LEEWAY", "3600"),
    ],
)
def test_invalid_variable_is_named(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        PKCEConfig.from_environ({**BASE, variable: value})


@pytest.mark.parametrize("weak", ["short", "a" * 64, "changeme" * 5, "0123456789" * 3])
def test_weak_secret_key_is_refused_without_echoing_it(weak: str) -> None:
    with pytest.raises(ConfigError, match="PKCE_SECRET_KEY") as info:
        PKCEConfig.from_environ({**BASE, "PKCE_SECRET_KEY": weak})
    assert weak not in str(info.value)


def test_http_is_allowed_for_loopback_issuer() -> None:
    assert PKCEConfig.from_environ({**BASE, "PKCE_ISSUER": "http://127.0.0.1:4000"}).issuer == "http://127.0.0.1:4000"


def test_key_list_keeps_order_for_rotation() -> None:
    other = secrets.token_urlsafe(32)
    config = PKCEConfig.from_environ({**BASE, "PKCE_SECRET_KEY": f"{other},{KEY}"})
    assert [str(key) for key in config.secret_keys] == [other, KEY]


def test_secrets_never_appear_in_repr() -> None:
    config = PKCEConfig(issuer="https://op.example", client_id="app", secret_key=KEY, client_secret="s3cret-value")
    text = repr(config) + str(config)
    assert KEY not in text and "s3cret-value" not in text
    assert "client_id='app'" in text


def test_constructor_accepts_plain_strings() -> None:
    config = PKCEConfig(issuer="https://op.example", client_id="app", secret_key=KEY, scopes=("email",))
    assert config.scopes == ("openid", "email")
    assert [str(key) for key in config.secret_keys] == [KEY]


def test_options_table_lists_every_variable() -> None:
    rows = PKCEConfig.options()
    names = [name for name, _, _ in rows]
    assert names[:3] == ["PKCE_ISSUER", "PKCE_CLIENT_ID", "PKCE_SECRET_KEY"]
    assert dict((name, default) for name, default, _ in rows)["PKCE_COOKIE_SECURE"] == "`true`"
    assert all(help_text for _, _, help_text in rows)
