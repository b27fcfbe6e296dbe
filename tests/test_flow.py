from __future__ import annotations

import re
import secrets

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from pkce_middleware._crypto import Sealer
from pkce_middleware._flow import (
    FLOW_MAX_AGE,
    FlowCodec,
    LoginFlow,
    UsedStates,
    flow_cookie_suffix,
    safe_return_path,
)


def test_rfc7636_appendix_b_vector() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert create_s256_code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_flow_values_are_fresh_and_well_formed() -> None:
    flows = [LoginFlow.start(issuer="https://op.test", redirect_uri="https://app/cb", return_to="/") for _ in range(50)]
    for flow in flows:
        assert re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", flow.code_verifier)
        assert flow.code_challenge == create_s256_code_challenge(flow.code_verifier)
        assert flow.code_challenge != flow.code_verifier
    for field in ("state", "nonce", "code_verifier"):
        assert len({getattr(a, field) for a in flows}) == len(flows)


def test_flow_round_trips_sealed_and_hides_secrets_in_repr() -> None:
    codec = FlowCodec(Sealer([secrets.token_urlsafe(32)], "flow"))
    flow = LoginFlow.start(issuer="https://op.test", redirect_uri="https://app/cb", return_to="/reports?q=1")
    value = codec.seal(flow)
    assert codec.open(value) == flow
    assert flow.state not in value and flow.code_verifier not in value
    assert flow.code_verifier not in repr(flow) and flow.nonce not in repr(flow)


def test_flow_expiry() -> None:
    flow = LoginFlow.start(issuer="https://op.test", redirect_uri="https://app/cb", return_to="/", now=1_000_000)
    assert not flow.expired(1_000_000 + FLOW_MAX_AGE - 1)
    assert flow.expired(1_000_000 + FLOW_MAX_AGE)
    assert flow.expired(1_000_000 - 3600)  # from the future: a clock jump or a forgery


def test_flow_cookie_suffix_only_for_plausible_states() -> None:
    state = secrets.token_urlsafe(32)
    suffix = flow_cookie_suffix(state)
    assert suffix is not None and re.fullmatch(r"[0-9a-f]{16}", suffix)
    for bad in ["", "short", "x" * 500, "a;b=c" * 10, "é" * 30]:
        assert flow_cookie_suffix(bad) is None


def test_used_states_refuse_a_second_claim_and_forget_after_expiry() -> None:
    used = UsedStates()
    assert used.claim("s1", now=0)
    assert not used.claim("s1", now=1)
    assert used.claim("s2", now=2)
    assert used.claim("s1", now=FLOW_MAX_AGE + 1)  # long expired: its cookie could not open anyway


def test_used_states_are_bounded() -> None:
    used = UsedStates(max_entries=10)
    for index in range(100):
        assert used.claim(f"state-{index}", now=0)
    assert len(used._seen) <= 10


@pytest.mark.parametrize(
    "target",
    [
        "/",
        "/reports",
        "/a/b?x=1&y=%2F",
        "/search?q=//not-a-host",
        "/path;v=1",
        "/%E2%9C%93",
        "/docs/My%20File.pdf",
        "/search?q=hello%20world",
        "/files?p=a%5Cb",
        "/a/./b",
    ],
)
def test_local_paths_pass(target: str) -> None:
    assert safe_return_path(target) == target


OPEN_REDIRECTS = [
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "/ /evil.example",
    "/%2Fevil.example",
    "/%2fevil.example",
    "/%5Cevil.example",
    "/%5cevil.example",
    "/%09/evil.example",
    "/%0a/evil.example",
    "https://evil.example/",
    "http:evil.example",
    "javascript:alert(1)",
    "evil.example",
    "",
    " /x",
    "/x\x00y",
    "/x\x7fy",
    "/a\\b",
    "/.//evil.example",
    "/..//evil.example",
    "/%2e%2e//evil.example",
    "/%2e/%2fevil.example",
    "/ \t/evil.example",
]


@pytest.mark.parametrize("target", OPEN_REDIRECTS)
def test_anything_a_browser_could_resolve_elsewhere_falls_back_to_root(target: str) -> None:
    assert safe_return_path(target) == "/"
