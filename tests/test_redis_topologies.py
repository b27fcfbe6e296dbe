"""Redis as operators run it (issue #14, item 4): TLS, Sentinel and Cluster, against real local nodes.

Each deployment is started once for its tests by `tests.support.redis_topologies`: a TLS-only
server with a private CA made at setup (which also asks for a client certificate), a master with a
replica and three sentinels, and a three-master cluster; the last two also with every node speaking
TLS only (to clients, and among themselves: replication, sentinels, cluster bus). The middleware
runs in front of the hostile provider as in `test_redis`; what is asserted is what a browser sees
(the user named in the page, status codes, cookies), and for the cluster where the keys went.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from pkce_middleware import ConfigError, PKCEMiddleware
from pkce_middleware._config_checks import _REDIS_SCHEMES
from pkce_middleware._redis import SCHEMES
from tests.support.hostile_provider import REMOVE, HostileProvider
from tests.support.redis_checks import cache_live, redis_site
from tests.support.redis_topologies import Certificates, RedisClusterNodes, SentinelGroup, TLSRedisServer
from tests.support.site import (
    APP_ORIGIN,
    SESSION_COOKIE,
    Site,
    hello_app,
    login,
    make_client,
    make_config,
    open_site,
    strong_secret_key,
)

pytestmark = pytest.mark.redis

JSON = {"Accept": "application/json"}
ORIGIN = {"Origin": APP_ORIGIN}


async def logout(client: httpx.AsyncClient) -> None:
    response = await client.post("/auth/logout", headers=ORIGIN)
    assert response.status_code == 303, response.text
    assert SESSION_COOKIE not in client.cookies


async def refused(site: Site, cookie: str) -> None:
    """A copy of `cookie` taken before a logout no longer logs anyone in."""
    replay = site.browser()
    replay.cookies.set(SESSION_COOKIE, cookie, domain="app.test")
    assert (await replay.get("/", headers=JSON)).status_code == 401


async def refused_login(url: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    """A login against the store at `url`, which cannot be reached: a 503 and no session, not a
    crash. The middleware's log messages, for the test to find the reason in."""
    caplog.set_level(logging.INFO, logger="pkce_middleware")
    async with redis_site(url) as site:
        response = await login(site.client, site.hostile)
        assert response.status_code == 503, response.text
        assert "reason: session_store_unavailable" in response.text
        assert SESSION_COOKIE not in site.client.cookies
    return [r.getMessage() for r in caplog.records if r.name == "pkce_middleware"]


# -- configuration ----------------------------------------------------------------------------------


def test_the_configuration_knows_every_scheme_the_client_does() -> None:
    assert _REDIS_SCHEMES == SCHEMES


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://127.0.0.1:26379/", "names the master"),
        ("redis+sentinel://127.0.0.1:26379", "names the master"),
        ("redis+sentinel://127.0.0.1:26379,127.0.0.1:x/pkce", "`x` is not a port"),
        ("redis+sentinel://127.0.0.1:99999/pkce", "`99999` is not a port"),
        ("redis+sentinel://127.0.0.1,,127.0.0.2/pkce", "a host is missing"),
        ("redis+sentinel:///pkce", "a host is missing"),
        ("redis+sentinel://127.0.0.1/pkce/zero", "the database must be a number"),
        ("redis+sentinel://127.0.0.1/pkce/0/1", "path is /<master name>[/<db>]"),
        ("redis+sentinel://127.0.0.1/pkce?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
        ("redis+cluster://127.0.0.1:7000/3", "a cluster URL has no path"),
        ("redis+cluster://127.0.0.1:7000/?db=2", "database 0 only"),
        ("redis+cluster://127.0.0.1:7000/?sentinel_password=x", "for sentinel URLs"),
        ("rediss://127.0.0.1:6380/0?health_check_interval=often", "Invalid value for 'health_check_interval'"),
        ("redis://127.0.0.1:6379/0?sockettimeout=1", "unknown option(s) in the query string: sockettimeout"),
        ("redis+cluster://127.0.0.1:7000/?ssl_password=x", "unknown option(s) in the query string: ssl_password"),
        (
            "redis+memcached://127.0.0.1",
            "must be `cookie` or a Redis URL (redis://, rediss://, unix://, redis+sentinel",
        ),
    ],
)
def test_a_malformed_redis_url_fails_at_startup_naming_the_variable(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        make_config(session_store=url)
    assert str(raised.value).startswith("PKCE_SESSION_STORE ")
    assert problem in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        make_config(revocation_store=url)
    assert str(raised.value).startswith("PKCE_REVOCATION_STORE ")


def test_a_password_in_a_malformed_url_is_not_repeated() -> None:
    with pytest.raises(ConfigError) as raised:
        make_config(session_store="redis+sentinel://:hunter2-secret@127.0.0.1:26379/")
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380,[::1]:26381/mymaster/2",
        "rediss+sentinel://user:pa%40ss@sentinel.internal/mymaster?sentinel_password=s3&ssl_ca_certs=/etc/ca.pem",
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001/",
        "rediss+cluster://:secret@node-1.internal?ssl_ca_certs=/etc/ca.pem&socket_timeout=0.5",
        "rediss://127.0.0.1:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem",
    ],
)
def test_well_formed_deployment_urls_are_accepted(url: str) -> None:
    assert make_config(session_store=url).session_store == url


# -- TLS ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates.create(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(certificates: Certificates) -> Iterator[TLSRedisServer]:
    with TLSRedisServer(certificates) as server:
        yield server


async def test_rediss_with_a_private_ca_and_a_client_certificate(tls_server: TLSRedisServer) -> None:
    assert tls_server.url.startswith("rediss://127.0.0.1:")
    async with redis_site(tls_server.url) as site:
        assert (await login(site.client, site.hostile)).status_code == 303
        cookie = site.client.cookies[SESSION_COOKIE]
        assert (await site.client.get("/")).text == "hello alice"
        await logout(site.client)
        await refused(site, cookie)

    # What the middleware wrote went over TLS to this server, and the logout deleted it there.
    certs = tls_server.certificates
    with redis.Redis(
        host="127.0.0.1",
        port=tls_server.port,
        ssl=True,
        ssl_ca_certs=str(certs.ca),
        ssl_certfile=str(certs.client_cert),
        ssl_keyfile=str(certs.client_key),
    ) as inspector:
        assert inspector.ping()
        assert list(inspector.scan_iter(match="pkce:session:*")) == []
        assert len(list(inspector.scan_iter(match="pkce:sub:*"))) <= 1  # emptied, expires with its last member


@pytest.mark.parametrize("trust", ["other CA", "no client certificate"])
async def test_a_tls_handshake_that_fails_is_a_503_and_a_log_line_not_a_crash(
    tls_server: TLSRedisServer, trust: str, caplog: pytest.LogCaptureFixture
) -> None:
    certs = tls_server.certificates
    details: tuple[str, ...]
    if trust == "other CA":
        url, details = tls_server.url_trusting(certs.other_ca), ("certificate verify failed",)
    else:
        # TLS 1.3: the client finishes its side of the handshake before the server refuses it, so
        # what it reads next is the server's alert or, when the server has closed first, a reset.
        url = f"rediss://127.0.0.1:{tls_server.port}/0?ssl_ca_certs={certs.ca}"
        details = ("certificate required", "Connection reset by peer")
    messages = await refused_login(url, caplog)
    assert any("session_store_unavailable" in m and any(d in m for d in details) for m in messages), messages


# -- Sentinel ----------------------------------------------------------------------------------------


@pytest.fixture
def sentinel_group() -> Iterator[SentinelGroup]:
    # Its own per test: a failover changes the group.
    with SentinelGroup() as group:
        yield group


async def test_a_sentinel_failover_logs_nobody_out_and_a_logout_after_it_holds(sentinel_group: SentinelGroup) -> None:
    group = sentinel_group
    old_master = group.master_port()
    async with redis_site(group.url) as site:
        await login(site.client, site.hostile)
        alice = site.client.cookies[SESSION_COOKIE]
        bob = site.browser()
        site.hostile.sub = "bob"
        await login(bob, site.hostile)
        bob_cookie = bob.cookies[SESSION_COOKIE]
        assert (await site.client.get("/")).text == "hello alice"
        assert (await bob.get("/")).text == "hello bob"
        await cache_live(site)  # serving from its cache through the failover is what is shown

        # Replication is asynchronous: a failover loses what the replica had not received yet (a
        # login there means logging in again). Here both logins have reached it first.
        with redis.Redis(host="127.0.0.1", port=old_master, socket_timeout=5) as master:
            assert master.wait(1, 10_000) == 1

        new_master = await asyncio.to_thread(group.failover)
        assert new_master != old_master

        # Both users carry on with the cookies they had; the first write after the switch (a login
        # of a third browser) finds the old master demoted and goes to the new one.
        assert (await site.client.get("/")).text == "hello alice"
        carol = site.browser()
        site.hostile.sub = "carol"
        assert (await login(carol, site.hostile)).status_code == 303
        assert (await carol.get("/")).text == "hello carol"
        assert (await bob.get("/")).text == "hello bob"

        # A logout after the failover is effective: gone from the new master, the old cookie refused.
        await logout(bob)
        await refused(site, bob_cookie)
        assert (await site.client.get("/")).text == "hello alice"
        assert site.client.cookies[SESSION_COOKIE] == alice

    with redis.Redis(host="127.0.0.1", port=new_master, socket_timeout=5) as client:
        assert client.info("replication")["role"] == "master"
        assert len(list(client.scan_iter(match="pkce:session:*"))) == 2  # alice and carol


async def test_a_master_that_dies_is_a_503_until_the_sentinels_promote_the_replica(
    sentinel_group: SentinelGroup,
) -> None:
    group = sentinel_group
    old_master = group.master_port()
    async with redis_site(group.url) as site:
        await login(site.client, site.hostile)
        cookie = site.client.cookies[SESSION_COOKIE]
        with redis.Redis(host="127.0.0.1", port=old_master, socket_timeout=5) as master:
            assert master.wait(1, 10_000) == 1  # the login reached the replica (see above)

        group.server(old_master).stop()
        # Until the sentinels agree that it is down (about a second here) and promote the replica,
        # a request that needs Redis is a 503 that keeps the session; none is a login redirect.
        during = await site.client.get("/")
        assert during.status_code == 503 or during.text == "hello alice", during.text  # 200: cached
        if during.status_code == 503:
            assert "reason: session_store_unavailable" in during.text
        assert site.client.cookies[SESSION_COOKIE] == cookie

        await asyncio.to_thread(group.wait_for_new_master, old_master)
        assert (await site.client.get("/")).text == "hello alice"
        await logout(site.client)
        await refused(site, cookie)


# -- Sentinel over TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_sentinel_group(certificates: Certificates) -> Iterator[SentinelGroup]:
    # Shared: no test here fails the group over, and starting one takes seconds (sentinels find each
    # other through hello messages sent every 2 s).
    with SentinelGroup(certificates) as group:
        yield group


async def test_rediss_sentinel_sessions_over_tls_to_the_sentinels_and_the_servers(
    tls_sentinel_group: SentinelGroup,
) -> None:
    group = tls_sentinel_group
    assert group.url.startswith("rediss+sentinel://127.0.0.1:")
    async with redis_site(group.url) as site:
        assert (await login(site.client, site.hostile)).status_code == 303
        cookie = site.client.cookies[SESSION_COOKIE]
        response = await site.client.get("/")
        assert response.status_code == 200 and response.text == "hello alice"

        # The session is on the master the sentinels named, and reached the replica: replication,
        # too, works with TLS only.
        assert group.replica is not None
        with group.client(group.master_port()) as master, group.client(group.replica.port) as replica:
            assert master.wait(1, 10_000) == 1
            sessions = list(master.scan_iter(match="pkce:session:*"))
            assert len(sessions) == 1
            assert replica.exists(*sessions) == 1

        await logout(site.client)
        await refused(site, cookie)


async def test_rediss_sentinel_with_an_untrusted_ca_is_a_503_and_a_log_line_not_a_crash(
    tls_sentinel_group: SentinelGroup, caplog: pytest.LogCaptureFixture
) -> None:
    group = tls_sentinel_group
    assert group.certificates is not None
    # The client never gets past the sentinels, so it cannot learn the master. redis-py's own
    # message (8.1) is over 2 kB of client reprs naming each failure by its type only; the line
    # names the sentinels by address and gives the handshake's own words.
    messages = await refused_login(group.url_trusting(group.certificates.other_ca), caplog)
    [line] = [m for m in messages if "session_store_unavailable" in m]
    assert "No master found for 'pkce' (127.0.0.1:" in line and "ConnectionError" in line, line
    assert "certificate verify failed" in line, line
    assert "<redis." not in line and len(line) < 1000, line


# -- Cluster ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterNodes]:
    with RedisClusterNodes() as nodes:
        yield nodes


@pytest.fixture
def cluster_keys(cluster: RedisClusterNodes) -> Iterator[Any]:
    """A function listing the keys matching a pattern on every node; the cluster is emptied first."""
    clients = list(cluster.clients())
    for client in clients:
        client.flushall()

    def keys(pattern: str) -> list[bytes]:
        return [key for client in clients for key in client.scan_iter(match=pattern)]

    yield keys
    for client in clients:
        client.close()


async def test_cluster_sessions_login_refresh_logout(cluster: RedisClusterNodes, cluster_keys: Any) -> None:
    async with redis_site(cluster.url) as site:
        # Access tokens from logins are due for refresh at once (60 s margin): the refresh lock and
        # the save under it run on the cluster too.
        site.hostile.token_overrides = {"expires_in": 30}
        browsers = [site.client, site.browser(), site.browser(), site.browser()]
        for number, browser in enumerate(browsers):
            site.hostile.sub = f"user-{number}"
            assert (await login(browser, site.hostile)).status_code == 303
        for number, browser in enumerate(browsers):
            assert (await browser.get("/")).text == f"hello user-{number}"
        assert site.hostile.calls["refresh"] == len(browsers)
        for number, browser in enumerate(browsers):
            assert (await browser.get("/")).text == f"hello user-{number}"
        assert site.hostile.calls["refresh"] == len(browsers)  # refreshed tokens were saved

        sessions = cluster_keys("pkce:session:*")
        assert len(sessions) == len(browsers)
        assert len({key_slot(key) for key in sessions}) == len(browsers)  # one per slot: nothing atomic across them
        assert cluster_keys("pkce:lock:*") == []

        cookie = site.client.cookies[SESSION_COOKIE]
        await logout(site.client)
        await refused(site, cookie)
        assert len(cluster_keys("pkce:session:*")) == len(browsers) - 1
        for number, browser in enumerate(browsers[1:], start=1):
            assert (await browser.get("/")).text == f"hello user-{number}"


async def test_cluster_session_caches_hear_a_logout_from_another_process(
    cluster: RedisClusterNodes, cluster_keys: Any
) -> None:
    # PUBLISH reaches the subscribers of every node: the process that did not log the user out
    # stops serving the session from its cache too.
    hostile = HostileProvider()
    key = strong_secret_key()
    async with (
        redis_site(cluster.url, hostile=hostile, secret_key=key) as one,
        redis_site(cluster.url, hostile=hostile, secret_key=key) as two,
    ):
        await login(one.client, hostile)
        cookie = one.client.cookies[SESSION_COOKIE]
        elsewhere = two.browser()
        elsewhere.cookies.set(SESSION_COOKIE, cookie, domain="app.test")
        assert (await elsewhere.get("/")).text == "hello alice"
        await cache_live(two)
        assert (await elsewhere.get("/")).text == "hello alice"  # from the cache

        await logout(one.client)
        await refused(one, cookie)
        deadline = time.monotonic() + 2
        while (await elsewhere.get("/", headers=JSON)).status_code != 401:
            assert time.monotonic() < deadline, "the other process still serves the session"
            await asyncio.sleep(0.02)


async def test_cluster_backchannel_logout_by_sid_and_by_sub(cluster: RedisClusterNodes, cluster_keys: Any) -> None:
    async with redis_site(cluster.url) as site:
        alice = [site.client, site.browser(), site.browser()]
        for number, browser in enumerate(alice):
            site.hostile.sid = f"op-{number}"
            await login(browser, site.hostile)
        site.hostile.sub, site.hostile.sid = "bob", "op-bob"
        bob = site.browser()
        await login(bob, site.hostile)
        # A session's key, its `sid` index and its `sub` index are in different hash slots.
        assert len({key_slot(key) for key in cluster_keys("pkce:*")}) == len(cluster_keys("pkce:*"))

        token = site.hostile.logout_token(sub="alice", sid="op-0")
        response = await bob.post("/auth/backchannel-logout", data={"logout_token": token})
        assert response.status_code == 200, response.text
        assert (await alice[0].get("/", headers=JSON)).status_code == 401
        assert [(await b.get("/")).text for b in (*alice[1:], bob)] == ["hello alice", "hello alice", "hello bob"]
        replayed = await bob.post("/auth/backchannel-logout", data={"logout_token": token})
        assert replayed.status_code == 400 and replayed.json()["error"] == "logout_token_replayed"

        # Only `sub`: every session of alice, whichever slots they live in; bob's stays.
        token = site.hostile.logout_token(sub="alice", claim_overrides={"sid": REMOVE})
        assert (await bob.post("/auth/backchannel-logout", data={"logout_token": token})).status_code == 200
        for browser in alice[1:]:
            assert (await browser.get("/", headers=JSON)).status_code == 401
        assert (await bob.get("/")).text == "hello bob"
        assert len(cluster_keys("pkce:session:*")) == 1


async def test_cluster_shared_revocation_log(cluster: RedisClusterNodes, cluster_keys: Any) -> None:
    async with open_site(revocation_store=cluster.url) as site:
        other = PKCEMiddleware(hello_app, config=site.config, transport=httpx.ASGITransport(app=site.hostile))
        try:
            async with make_client(other) as on_other:
                site.hostile.sid = "shared-1"
                await login(site.client, site.hostile)
                on_other.cookies.set(SESSION_COOKIE, site.client.cookies[SESSION_COOKIE], domain="app.test")
                assert (await on_other.get("/")).text == "hello alice"

                token = site.hostile.logout_token(sid="shared-1")
                response = await site.client.post("/auth/backchannel-logout", data={"logout_token": token})
                assert response.status_code == 200, response.text
                assert (await site.client.get("/", headers=JSON)).status_code == 401
                # The other process reads the log every second.
                deadline = time.monotonic() + 10
                while (await on_other.get("/", headers=JSON)).status_code != 401:
                    assert time.monotonic() < deadline, "the other process still accepts the session"
                    await asyncio.sleep(0.1)
                replay = await on_other.post("/auth/backchannel-logout", data={"logout_token": token})
                assert replay.status_code == 400 and replay.json() == {"error": "logout_token_replayed"}
                assert len(cluster_keys("pkce:revocation-log")) == 1
        finally:
            await other.aclose()


# -- Cluster over TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_cluster(certificates: Certificates) -> Iterator[RedisClusterNodes]:
    with RedisClusterNodes(certificates) as nodes:
        yield nodes


async def test_rediss_cluster_sessions_over_tls_to_every_node(tls_cluster: RedisClusterNodes) -> None:
    assert tls_cluster.url.startswith("rediss+cluster://127.0.0.1:")
    nodes = list(tls_cluster.clients())
    try:
        for node in nodes:
            node.flushall()
        async with redis_site(tls_cluster.url) as site:
            # Keys go to random slots: users log in until every node holds some, so the client has
            # had to open a TLS connection to each (3 nodes, a few keys a login: about 3 logins).
            browsers: list[httpx.AsyncClient] = []
            while not all(next(node.scan_iter(match="pkce:*"), None) for node in nodes):
                assert len(browsers) < 20, "the keys of 20 logins never reached every node"
                browser = site.client if not browsers else site.browser()
                site.hostile.sub = f"user-{len(browsers)}"
                assert (await login(browser, site.hostile)).status_code == 303
                browsers.append(browser)
            for number, browser in enumerate(browsers):
                response = await browser.get("/")
                assert response.status_code == 200 and response.text == f"hello user-{number}"
            assert sum(len(list(node.scan_iter(match="pkce:session:*"))) for node in nodes) == len(browsers)

            cookie = site.client.cookies[SESSION_COOKIE]
            await logout(site.client)
            await refused(site, cookie)
            for number, browser in enumerate(browsers[1:], start=1):
                assert (await browser.get("/")).text == f"hello user-{number}"
    finally:
        for node in nodes:
            node.close()


async def test_rediss_cluster_with_an_untrusted_ca_is_a_503_and_a_log_line_not_a_crash(
    tls_cluster: RedisClusterNodes, caplog: pytest.LogCaptureFixture
) -> None:
    assert tls_cluster.certificates is not None
    messages = await refused_login(tls_cluster.url_trusting(tls_cluster.certificates.other_ca), caplog)
    assert any("session_store_unavailable" in m and "certificate verify failed" in m for m in messages), messages
    # No node reachable is no ordinary outage of one server: a warning with the stack, for the operator.
    [warning] = [r for r in caplog.records if r.getMessage().startswith("redis cluster client failed: ")]
    assert warning.levelno == logging.WARNING and warning.exc_info is not None
    assert warning.exc_info[0] is RedisClusterException
    assert "certificate verify failed" in warning.getMessage()
