"""What the tests share: the test site, the hostile provider, and launchers for real processes.

* `processes`: the one launcher (`Process`) for external processes, with `free_port()`;
* `oidc_provider`: panva's oidc-provider (`LocalProvider`) and form-walking browser helpers;
* `django_providers`: django-oauth-toolkit and django-oidc-provider (`DjangoOAuthToolkitProvider`,
  `DjangoOIDCProvider`), the Django project of `django_op`; `django_forms` answers their forms;
* `redis_server`: a real `redis-server` (`RedisServer`);
* `servers`: the examples under real uvicorn, hypercorn and granian (`AppServer`, `serve_all`, `app_server`);
* `hostile_provider`: an in-process OpenID Provider that misbehaves on request (`HostileProvider`);
* `site`: the middleware in front of it, and a browser that logs in (`open_site`, `login`, ...).
* `websocket`: a WebSocket handshake driven by hand, as a server would (`Socket`, `handshake`).
"""
