"""`Reason`: the reason codes every `PKCEMiddlewareError` carries, each with the description the
README's reason table (`scripts/update_readme.py`) is made from.

A code goes into the log line and the JSON body of a refusal; the set is closed and enumerable, so
a log query or an alert can match on it. The exceptions themselves live in `_exceptions.py`, which
re-exports this class.
"""

from __future__ import annotations

import enum

__all__ = ["Reason"]


class Reason(enum.StrEnum):
    """The reason codes of log lines, JSON error bodies and error pages; the README lists them.

    Each member is the code (a plain string, so it compares and serialises as one) and carries a
    `description` for the README's table.
    """

    description: str

    def __new__(cls, value: str, description: str) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member

    # -- configuration and startup
    CONFIG_ERROR = "config_error", "A setting is wrong; the message names the variable."
    DISCOVERY_MISMATCH = "discovery_mismatch", "The provider's metadata names another issuer than `PKCE_ISSUER`."
    ALGORITHM_MISMATCH = "algorithm_mismatch", "The provider signs ID tokens with no algorithm we accept."
    # -- a request without a session
    LOGIN_REQUIRED = "login_required", "No session, and the request is not a page load: a 401."
    # -- authorization (who may enter)
    EMAIL_NOT_ALLOWED = "email_not_allowed", "The user's email address is not in an allowed domain or list (403)."
    EMAIL_UNVERIFIED = "email_unverified", "An email rule is set and the provider does not say the address is verified."
    GROUP_NOT_ALLOWED = "group_not_allowed", "The user is in none of the allowed groups (403)."
    ACR_NOT_ALLOWED = "acr_not_allowed", "The login's `acr` is not one the rule asks for (step-up, or 403 after one)."
    LOGIN_TOO_OLD = "login_too_old", "The login (`auth_time`) is older than the rule's `max_age`, or has no time."
    # -- access tokens (bearer paths)
    BEARER_MISSING = "bearer_missing", "No access token on a path that needs one (401, with the metadata URL)."
    BEARER_MALFORMED = "bearer_malformed", "The `Authorization` header is not `Bearer <token>` as RFC 6750 says (400)."
    BEARER_INVALID = "bearer_invalid", "The access token is forged, malformed, or not an access token (401)."
    BEARER_EXPIRED = "bearer_expired", "The access token has expired (401)."
    BEARER_AUDIENCE = "bearer_audience", "The access token is for another resource (`aud`; 401)."
    BEARER_INACTIVE = "bearer_inactive", "Introspection says the token is not active (revoked, expired, unknown; 401)."
    INSUFFICIENT_SCOPE = "insufficient_scope", "A valid token lacking a scope of `PKCE_BEARER_REQUIRED_SCOPES` (403)."
    DPOP_REQUIRED = "dpop_required", "A DPoP-bound token sent without its proof, or as a bearer token (401)."
    DPOP_INVALID = "dpop_invalid", "The DPoP proof is missing, malformed, or not for this request, token or key (401)."
    DPOP_REPLAYED = "dpop_replayed", "A DPoP proof (`jti`) used before (401)."
    DPOP_CACHE_FULL = "dpop_cache_full", "Too many DPoP proofs in their window to remember another (503)."
    INTROSPECTION_UNAVAILABLE = "introspection_unavailable", "The provider cannot check the token right now (503)."
    # -- the callback (what the browser brought back)
    BAD_CALLBACK = "bad_callback", "The callback request is not one we accept."
    METHOD_NOT_ALLOWED = "method_not_allowed", "A method the endpoint does not take."
    DUPLICATE_PARAMETER = "duplicate_parameter", "`state`, `code`, `iss` or `error` appears twice."
    STATE_MISSING = "state_missing", "The callback has no `state`."
    FLOW_MISSING = "flow_missing", "This browser has no login flow for that `state` (another browser, or old)."
    FLOW_INVALID = "flow_invalid", "The flow cookie does not open (forged, or sealed with a retired key)."
    FLOW_EXPIRED = "flow_expired", "The login took longer than ten minutes."
    STATE_MISMATCH = "state_mismatch", "The `state` differs from the flow's."
    STATE_REPLAYED = "state_replayed", "This `state` was redeemed before (a replayed callback)."
    ISSUER_MISMATCH = "issuer_mismatch", "The flow went to another provider."
    UNKNOWN_PROVIDER = "unknown_provider", "`?provider=` names no provider of `PKCE_PROVIDERS` (400)."
    CHOOSE_PROVIDER = "choose_provider", "Not an error: several providers, and the page asking which (200)."
    ISS_MISSING = "iss_missing", "No `iss` though the provider promises it (RFC 9207)."
    ISS_MISMATCH = "iss_mismatch", "`iss` is not our provider (RFC 9207 mix-up defence)."
    CODE_MISSING = "code_missing", "The callback has no `code`."
    CODE_REJECTED = "code_rejected", "The provider refused the code (used, expired, wrong verifier)."
    CLIENT_REJECTED = "client_rejected", "The provider refused our client id or secret (`invalid_client`): a setting."
    LOGIN_FAILED = "login_failed", "A sign-in or sign-out request that cannot be served."
    # -- the provider's answers
    PROVIDER_ERROR = "provider_error", "The provider sent the browser back with `error=`, or answered unusably."
    PROVIDER_UNAVAILABLE = "provider_unavailable", "Discovery or the JWKS failed moments ago; not asked again yet."
    PROVIDER_UNREACHABLE = "provider_unreachable", "No connection to the provider."
    PROVIDER_TIMEOUT = "provider_timeout", "The provider did not answer in time."
    DISCOVERY_FAILED = "discovery_failed", "The discovery document answered an error status."
    DISCOVERY_INVALID = "discovery_invalid", "The discovery document is not usable metadata."
    DISCOVERY_TIMEOUT = "discovery_timeout", "The discovery document did not come in time."
    JWKS_FAILED = "jwks_failed", "The JWKS answered an error status."
    JWKS_INVALID = "jwks_invalid", "The JWKS is not a key set."
    JWKS_TIMEOUT = "jwks_timeout", "The JWKS did not come in time."
    TOKEN_ENDPOINT_ERROR = "token_endpoint_error", "The token endpoint answered an error status."
    TOKEN_INVALID = "token_invalid", "The token endpoint's answer is not JSON, or too large."
    TOKEN_RESPONSE_INVALID = "token_response_invalid", "The token answer lacks a token, or holds a malformed one."
    TOKEN_TIMEOUT = "token_timeout", "The token endpoint did not answer in time."
    ID_TOKEN_INVALID = "id_token_invalid", "The ID token failed validation (OIDC Core 3.1.3.7)."
    USERINFO_FAILED = "userinfo_failed", "The userinfo endpoint answered an error status (`PKCE_USERINFO`)."
    USERINFO_INVALID = "userinfo_invalid", "The userinfo answer is not JSON nor a JWT we can verify (or is encrypted)."
    USERINFO_TIMEOUT = "userinfo_timeout", "The userinfo endpoint did not answer in time."
    USERINFO_SUB_MISMATCH = "userinfo_sub_mismatch", "Userinfo names another `sub` than the ID token (OIDC Core 5.3.2)."
    SESSION_TOO_LARGE = "session_too_large", "The tokens do not fit in the cookies a browser keeps."
    # -- sessions
    REFRESH_REJECTED = "refresh_rejected", "The provider refused the refresh token: the session ends."
    REFRESH_ID_TOKEN_INVALID = "refresh_id_token_invalid", "A refreshed ID token failed validation: the session ends."
    REFRESH_ENDPOINT_ERROR = "refresh_endpoint_error", "A refresh got an error status (an outage, ridden out)."
    REFRESH_INVALID = "refresh_invalid", "A refresh answer is not JSON, or too large."
    REFRESH_RESPONSE_INVALID = "refresh_response_invalid", "A refresh answer lacks a token, or holds a malformed one."
    REFRESH_TIMEOUT = "refresh_timeout", "A refresh did not finish in time."
    REFRESH_IN_PROGRESS = "refresh_in_progress", "Another process has been refreshing this session for too long."
    SESSION_ENDED = "session_ended", "The session ended while its refresh was due (logged out meanwhile)."
    SESSION_UNAVAILABLE = "session_unavailable", "The access token expired and the provider cannot refresh it now."
    SESSION_STORE_UNAVAILABLE = "session_store_unavailable", "The session store (Redis) is not answering."
    CROSS_ORIGIN_WEBSOCKET = "cross_origin_websocket", "A WebSocket handshake from a page of another origin."
    # -- sign-out and back-channel logout
    CROSS_ORIGIN_LOGOUT = "cross_origin_logout", "A sign-out POST that did not come from this site."
    LOGOUT_TOKEN_INVALID = "logout_token_invalid", "A back-channel logout request or token we refuse."
    LOGOUT_TOKEN_REPLAYED = "logout_token_replayed", "A logout token (`jti`) used before."
    REVOCATION_SOFT_CAP = "revocation_soft_cap", "The in-memory logout list passed its soft cap (nothing dropped)."
    # -- anything else
    INTERNAL_ERROR = "pkce_middleware_error", "An error without a more specific code."
