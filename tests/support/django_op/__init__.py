"""A tiny Django project serving one of two Python OpenID Providers, for interop tests.

Two settings modules over one shared core (`common`):

* `settings_dot`: django-oauth-toolkit (`oauth2_provider`) in OIDC mode, mounted at `/o/`
  (issuer `http://127.0.0.1:<port>/o`): RSA key, PKCE required (S256 only), RFC 9207 `iss` in
  authorization responses, refresh tokens (rotated), RP-initiated logout with its confirmation
  form. A client with `"openid": false` is a plain OAuth 2.0 client (no ID tokens, ever); such
  clients read the user from a GitHub-like profile endpoint, `GET /api/user` (scope `read`;
  `{"id": <pk, a number>, "login", "name", "email"}`; see `dot_plain`).
* `settings_dop`: django-oidc-provider (`oidc_provider`), mounted at `/openid/` (issuer
  `http://127.0.0.1:<port>/openid`): PKCE when the client sends it (never required), refresh
  tokens (rotated), end_session without a prompt for a known `post_logout_redirect_uri`.

`python -m tests.support.django_op.serve` (see `serve`) applies the migrations to a fresh sqlite
database, creates the users, clients and keys of its configuration, and serves the project's ASGI
app under uvicorn on 127.0.0.1. Configuration: ONE JSON object in the env var `DJOP_CONFIG`:

    kind              "dot" | "dop", required: which provider.
    port              int, required.
    data_dir          str, required: an existing directory for the sqlite database.
    access_token_ttl  seconds, default 3600: the access tokens' lifetime (`expires_in`).
    id_token_ttl      seconds, default 600.
    users             [{"username", "password", "email" (default "<username>@example.test"),
                        "name" (default the username)}]
    clients           [{"client_id", "client_secret" (absent or null: a public client),
                        "redirect_uris": [...], "post_logout_redirect_uris": [...],
                        "grant_types": ["authorization_code", "refresh_token"] (default; DOT has one
                        grant type per client, and issues refresh tokens with every code grant),
                        "skip_consent": false (default: the consent form is shown),
                        "openid": true (default; DOT only: false makes a plain OAuth 2.0 client),
                        "authorization_response_iss": true (default; DOT only: false leaves
                        RFC 9207 `iss` out of this client's authorization responses)}]

Users log in at `/accounts/login/` (Django's `LoginView`, fields `username` and `password`);
`sub` is the user's primary key, as both providers make it.

Output, one line each (flushed), for tests to grep:

    DJOP VERSION <package> <version> django <version>
    DJOP USER <username> <sub>
    DJOP READY <issuer>
    DJOP <METHOD> <path-without-query> <status>       every request
    DJOP grant <grant_type> <client_id> <ok|error>   every POST to the token endpoint
    DJOP issued <grant_type> <client_id> <token>      every access token it issues (`<token>`: the
                                                      start of its SHA-256, `log.token_fingerprint`)
    DJOP profile <client_id> <username> <token>      every answer of DOT's `/api/user`, and the
                                                      fingerprint of the bearer token it was read with
"""
