"""Redis as operators run it, for tests: TLS, a Sentinel group, a Cluster; real processes on 127.0.0.1.

    certificates = Certificates.create(directory)        # a private CA, a server and a client cert
    with TLSRedisServer(certificates) as server:
        server.url                                       # rediss://127.0.0.1:<port>/0?ssl_ca_certs=...

    with SentinelGroup() as group:                       # a master, a replica, three sentinels
        group.url                                        # redis+sentinel://127.0.0.1:<s1>,...:<s3>/pkce/0
        group.failover()                                 # SENTINEL FAILOVER; returns the new master's port
        group.wait_for_new_master(port)                  # after stopping the master at `port`, say

    with RedisClusterNodes() as cluster:                 # three masters, all 16384 slots assigned
        cluster.url                                      # redis+cluster://127.0.0.1:<p1>,...:<p3>/

    SentinelGroup(certificates), RedisClusterNodes(certificates)
                                                         # the same, every node TLS only (replication,
                                                         # sentinels and cluster bus too): rediss+...://

Every process is a `tests.support.processes.Process` (the redis-servers through `RedisServer`). A
group is ready when Redis says so, polled, never after a fixed sleep: a sentinel once it knows the
replica and the two other sentinels, a replica once its link to the master is up, a cluster once
every node answers `cluster_state:ok`. Each wait is bounded by the startup timeout of
`tests.support.processes` (120 s by default), which a working setup never comes near.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlencode

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.processes import Launcher, Process, ProcessError, free_port, startup_timeout
from tests.support.redis_server import RedisServer, _executable

__all__ = ["Certificates", "RedisClusterNodes", "SentinelGroup", "TLSRedisServer", "poll"]

LOOPBACK = "127.0.0.1"
MASTER_NAME = "pkce"


def poll(what: str, check: Callable[[], str | None], timeout: float | None = None) -> None:
    """Call `check` every 50 ms until it returns `None`; `TimeoutError` with its last answer otherwise."""
    deadline = time.monotonic() + startup_timeout(timeout)
    while True:
        waiting_for = check()
        if waiting_for is None:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: still {waiting_for}")
        time.sleep(0.05)


# -- TLS ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Certificates:
    """PEM files in one directory: a CA, a server certificate for 127.0.0.1 and a client certificate
    it signed, and a second CA that signed nothing here (for "untrusted" tests)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path

    @classmethod
    def create(cls, directory: Path) -> Certificates:
        ca_key, ca_cert = _authority("pkce test CA")
        _, other_cert = _authority("some other CA")
        server_key, server_cert = _leaf(ca_key, ca_cert, "redis", ExtendedKeyUsageOID.SERVER_AUTH)
        client_key, client_cert = _leaf(ca_key, ca_cert, "pkce client", ExtendedKeyUsageOID.CLIENT_AUTH)
        files = {
            "ca": _pem_cert(ca_cert),
            "server_cert": _pem_cert(server_cert),
            "server_key": _pem_key(server_key),
            "client_cert": _pem_cert(client_cert),
            "client_key": _pem_key(client_key),
            "other_ca": _pem_cert(other_cert),
        }
        paths: dict[str, Path] = {}
        for name, content in files.items():
            path = directory / f"{name}.pem"
            path.write_bytes(content)
            paths[name] = path
        return cls(**paths)


def _authority(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, common_name: str, usage: x509.ObjectIdentifier
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        _builder(name, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _tls_options(certificates: Certificates, port: int) -> list[tuple[str, str]]:
    """A redis-server's (or sentinel's) settings to listen on `port` with TLS only, ask clients for
    a certificate of the CA, and use TLS, with the client certificate, for its own connections to
    the other nodes."""
    return [
        ("port", "0"),
        ("tls-port", str(port)),
        ("tls-cert-file", str(certificates.server_cert)),
        ("tls-key-file", str(certificates.server_key)),
        ("tls-ca-cert-file", str(certificates.ca)),
        ("tls-auth-clients", "yes"),
        # The server certificate is for servers only (extended key usage): a node that connects to
        # another (replica, sentinel, cluster bus) shows the client certificate instead.
        ("tls-client-cert-file", str(certificates.client_cert)),
        ("tls-client-key-file", str(certificates.client_key)),
        ("tls-replication", "yes"),
    ]


def _tls_args(certificates: Certificates, port: int) -> list[str]:
    return [word for name, value in _tls_options(certificates, port) for word in (f"--{name}", value)]


def _tls_query(certificates: Certificates, ca: Path) -> str:
    """The query string of a client URL that trusts `ca` and shows the client certificate."""
    return urlencode(
        {"ssl_ca_certs": ca, "ssl_certfile": certificates.client_cert, "ssl_keyfile": certificates.client_key}
    )


def _client(port: int, certificates: Certificates | None) -> redis.Redis:
    """A client of the node (server or sentinel) at `port`, over TLS when the nodes speak it."""
    if certificates is None:
        return redis.Redis(host=LOOPBACK, port=port, socket_timeout=5)
    return redis.Redis(
        host=LOOPBACK,
        port=port,
        socket_timeout=5,
        ssl=True,
        ssl_ca_certs=str(certificates.ca),
        ssl_certfile=str(certificates.client_cert),
        ssl_keyfile=str(certificates.client_key),
    )


class TLSRedisServer(RedisServer):
    """A `redis-server` that speaks TLS only (`--port 0`), and asks clients for a certificate of the CA."""

    def __init__(
        self, certificates: Certificates, *, args: Sequence[str] = (), startup_timeout: float | None = None
    ) -> None:
        super().__init__(args=args, startup_timeout=startup_timeout)
        self.certificates = certificates

    def _listen_args(self) -> list[str]:
        return _tls_args(self.certificates, self.port)

    @property
    def url(self) -> str:
        return self.url_trusting(self.certificates.ca)

    def url_trusting(self, ca: Path) -> str:
        """The rediss:// URL of a client that trusts `ca` and shows the client certificate."""
        return f"rediss://{LOOPBACK}:{self.port}/0?{_tls_query(self.certificates, ca)}"


# -- Sentinel -------------------------------------------------------------------------------------


class Sentinel(Launcher):
    """One sentinel (`redis-server <conf> --sentinel`) watching `MASTER_NAME` at `master_port`; TLS
    only (to clients, to the servers and to the other sentinels) when given `certificates`."""

    def __init__(
        self,
        master_port: int,
        directory: Path,
        *,
        certificates: Certificates | None = None,
        startup_timeout: float | None = None,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.master_port = master_port
        self.certificates = certificates
        self._directory = directory

    def _launch(self) -> None:
        # A sentinel rewrites its configuration file (what it learnt), so each has its own.
        config = self._directory / f"sentinel-{self.port}.conf"
        if self.certificates is None:
            listen = [f"port {self.port}"]
        else:
            listen = [f"{name} {value}" for name, value in _tls_options(self.certificates, self.port)]
        config.write_text(
            "\n".join(
                [
                    *listen,
                    f"bind {LOOPBACK}",
                    "daemonize no",
                    'logfile ""',
                    f"dir {self._directory}",
                    f"sentinel monitor {MASTER_NAME} {LOOPBACK} {self.master_port} 2",
                    # Short, so a stopped master is noticed in about a second (production: 5-30 s).
                    f"sentinel down-after-milliseconds {MASTER_NAME} 1000",
                    f"sentinel failover-timeout {MASTER_NAME} 10000",
                    f"sentinel parallel-syncs {MASTER_NAME} 1",
                    "",
                ]
            )
        )
        self._process = Process(
            [_executable(), str(config), "--sentinel"],
            name=f"sentinel on port {self.port}",
            cwd=self._directory,
            ready_pattern=r"\+monitor master",
            ready_port=self.port,
            startup_timeout=self._startup_timeout,
        )
        self._process.start_and_wait()

    def client(self) -> redis.Redis:
        return _client(self.port, self.certificates)


class SentinelGroup:
    """A master, one replica and three sentinels (quorum 2) on 127.0.0.1; see the module docstring.
    With `certificates`, every one of them speaks TLS only, among themselves too."""

    def __init__(self, certificates: Certificates | None = None, *, startup_timeout: float | None = None) -> None:
        self.certificates = certificates
        self._startup_timeout = startup_timeout
        self._dir = tempfile.TemporaryDirectory(prefix="pkce-sentinel-")
        self.master = self._server()
        self.replica: RedisServer | None = None
        self.sentinels: list[Sentinel] = []
        self._stack = contextlib.ExitStack()

    def _server(self, args: Sequence[str] = ()) -> RedisServer:
        if self.certificates is None:
            return RedisServer(args=args, startup_timeout=self._startup_timeout)
        return TLSRedisServer(self.certificates, args=args, startup_timeout=self._startup_timeout)

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Sentinels first, so none reconfigures the servers while they stop.
        self._stack.close()
        self._dir.cleanup()

    def _start(self) -> None:
        servers = contextlib.ExitStack()
        self._stack.enter_context(servers)
        servers.enter_context(self.master)
        self.replica = servers.enter_context(self._server(["--replicaof", LOOPBACK, str(self.master.port)]))
        poll("replica linked to its master", self._replica_linked, self._startup_timeout)
        directory = Path(self._dir.name)
        for _ in range(3):
            sentinel = Sentinel(
                self.master.port, directory, certificates=self.certificates, startup_timeout=self._startup_timeout
            )
            # Entered after the servers, so left before them.
            self.sentinels.append(self._stack.enter_context(sentinel))
        for sentinel in self.sentinels:
            poll(f"sentinel {sentinel.port} knows the group", _knows_group(sentinel), self._startup_timeout)

    def _replica_linked(self) -> str | None:
        assert self.replica is not None
        with self.client(self.replica.port) as client:
            info = client.info("replication")
        return None if info.get("master_link_status") == "up" else f"replication {info}"

    def client(self, port: int) -> redis.Redis:
        """A client of the server at `port` (over TLS when the group speaks it)."""
        return _client(port, self.certificates)

    @property
    def url(self) -> str:
        if self.certificates is None:
            hosts = ",".join(f"{LOOPBACK}:{sentinel.port}" for sentinel in self.sentinels)
            return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"
        return self.url_trusting(self.certificates.ca)

    def url_trusting(self, ca: Path) -> str:
        """The rediss+sentinel:// URL of a client that trusts `ca` and shows the client certificate
        (to the sentinels and the servers alike)."""
        assert self.certificates is not None
        hosts = ",".join(f"{LOOPBACK}:{sentinel.port}" for sentinel in self.sentinels)
        return f"rediss+sentinel://{hosts}/{MASTER_NAME}/0?{_tls_query(self.certificates, ca)}"

    def master_port(self) -> int:
        """The master's port, as the first sentinel sees it."""
        with self.sentinels[0].client() as client:
            _, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)

    def server(self, port: int) -> RedisServer:
        assert self.replica is not None
        return self.master if port == self.master.port else self.replica

    def failover(self) -> int:
        """Promote the replica (SENTINEL FAILOVER); return once the new master takes writes and every
        sentinel names it. The old master is turned into its replica by the sentinels."""
        before = self.master_port()
        with self.sentinels[0].client() as client:
            client.sentinel_failover(MASTER_NAME)
        return self.wait_for_new_master(before)

    def wait_for_new_master(self, before: int) -> int:
        """Return once every sentinel names a master other than `before`, and that server says it is one."""

        def switched() -> str | None:
            for sentinel in self.sentinels:
                with sentinel.client() as client:
                    _, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                if int(port) == before:
                    return f"sentinel {sentinel.port} names the old master {before}"
            with self.client(self.master_port()) as client:
                role = client.info("replication")["role"]
            return None if role == "master" else f"new master's role is {role}"

        poll("failover", switched, self._startup_timeout)
        return self.master_port()


def _knows_group(sentinel: Sentinel) -> Callable[[], str | None]:
    def check() -> str | None:
        with sentinel.client() as client:
            state = client.sentinel_master(MASTER_NAME)
        # A failover needs a replica to promote and a quorum of sentinels that see each other.
        if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
            return f"num-slaves={state['num-slaves']} num-other-sentinels={state['num-other-sentinels']}"
        return None

    return check


# -- Cluster --------------------------------------------------------------------------------------


class ClusterNode(RedisServer):
    """A `redis-server` in cluster mode, its bus on a free port of its own (the default, port + 10000,
    may be taken or above 65535); TLS only (to clients and on the bus) when given `certificates`."""

    def __init__(self, certificates: Certificates | None = None, *, startup_timeout: float | None = None) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.certificates = certificates

    def _listen_args(self) -> list[str]:
        if self.certificates is None:
            listen = super()._listen_args()
        else:
            # With tls-cluster the bus speaks TLS, and the node announces its TLS port to clients.
            listen = [*_tls_args(self.certificates, self.port), "--tls-cluster", "yes"]
        return [
            *listen,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",  # in the node's own directory
            "--cluster-port",
            str(free_port()),
            "--cluster-node-timeout",
            "5000",
        ]


class RedisClusterNodes:
    """Three cluster-mode masters on 127.0.0.1 sharing the 16384 slots (no replicas); TLS only when
    given `certificates`."""

    def __init__(self, certificates: Certificates | None = None, *, startup_timeout: float | None = None) -> None:
        self.certificates = certificates
        self._startup_timeout = startup_timeout
        self.nodes = [ClusterNode(certificates, startup_timeout=startup_timeout) for _ in range(3)]
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        try:
            for node in self.nodes:
                self._stack.enter_context(node)
            self._create()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    def _create(self) -> None:
        addresses = [f"{LOOPBACK}:{node.port}" for node in self.nodes]
        tls: list[str] = []
        if self.certificates is not None:
            certs = self.certificates
            tls = ["--tls", "--cacert", str(certs.ca), "--cert", str(certs.client_cert), "--key", str(certs.client_key)]
        result = subprocess.run(
            ["redis-cli", *tls, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=startup_timeout(self._startup_timeout),
            check=False,
        )
        if result.returncode != 0:
            raise ProcessError(f"redis-cli --cluster create failed:\n{result.stdout}\n{result.stderr}")
        for node in self.nodes:
            poll(f"cluster node {node.port} ready", _cluster_ok(node.port, self.certificates), self._startup_timeout)

    @property
    def url(self) -> str:
        if self.certificates is None:
            return "redis+cluster://" + ",".join(f"{LOOPBACK}:{node.port}" for node in self.nodes) + "/"
        return self.url_trusting(self.certificates.ca)

    def url_trusting(self, ca: Path) -> str:
        """The rediss+cluster:// URL of a client that trusts `ca` and shows the client certificate."""
        assert self.certificates is not None
        hosts = ",".join(f"{LOOPBACK}:{node.port}" for node in self.nodes)
        return f"rediss+cluster://{hosts}/?{_tls_query(self.certificates, ca)}"

    def clients(self) -> Iterator[redis.Redis]:
        """A client per node, not a cluster client (to look at what each one holds)."""
        for node in self.nodes:
            yield _client(node.port, self.certificates)


def _cluster_ok(port: int, certificates: Certificates | None) -> Callable[[], str | None]:
    def check() -> str | None:
        with _client(port, certificates) as client:
            info = client.cluster("INFO")
        # Every node must know every slot's owner, or a client's first command may bounce (CLUSTERDOWN).
        if info.get("cluster_state") == "ok" and str(info.get("cluster_slots_ok")) == "16384":
            return None
        return f"cluster_state={info.get('cluster_state')} cluster_slots_ok={info.get('cluster_slots_ok')}"

    return check
