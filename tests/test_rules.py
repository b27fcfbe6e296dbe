"""The authorization rules without a server: `Require`'s checks on claims, how path rules merge
and match (`Rules`, `rule_path`), `claim_at`, and the `PKCE_ALLOWED_*` / `PKCE_ACR_VALUES` options.

The claims here are what an attacker would try to get past a rule: look-alike domains, a second
`@`, a verified flag that is not `true`, groups of the wrong type, times that date no login.
"""

from __future__ import annotations

import time
from types import MappingProxyType
from typing import Any

import pytest

from pkce_middleware import AccessDenied, ConfigError, PKCEConfig, Reason, Require, StepUpRequired
from pkce_middleware._claims import kept
from pkce_middleware._rules import Rules, claim_at, rule_path
from tests.support.site import CLIENT_ID, ISSUER, strong_secret_key

NOW = 1_700_000_000.0


def verified(email: Any, **more: Any) -> dict[str, Any]:
    return {"sub": "alice", "email": email, "email_verified": True, **more}


# -- email domains ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "email",
    [
        "ann@example.com",
        "ANN@EXAMPLE.COM",
        "Ann@Example.Com",
        "bob@other.example",
    ],
)
def test_an_address_in_an_allowed_domain_passes_whatever_its_case(email: str) -> None:
    rule = Require(email_domains=["EXAMPLE.com", "other.example"])
    assert rule.email_domains == ("example.com", "other.example")
    assert rule.refusal(verified(email)) is None


@pytest.mark.parametrize(
    "email",
    [
        "mallory@evil-example.com",  # a look-alike registered next door
        "mallory@notexample.com",
        "mallory@example.com.evil.test",  # the allowed domain as a subdomain of the attacker's
        "mallory@example.co",
        "mallory@sub.example.com",  # an exact domain does not take its subdomains
        "mallory@example.com.",  # a trailing dot is another string
        "mallory@example.com ",
        "mallory@ex\u0430mple.com",  # a Cyrillic a
        "example.com@evil.test",
        "mallory@evil.test@example.com",  # a second "@": mail servers disagree on where it goes
        "a@b@example.com",
        "mallory@",
        "mallory",
        "",
    ],
)
def test_an_address_outside_the_allowed_domains_is_refused(email: str) -> None:
    rule = Require(email_domains=["example.com"])
    assert rule.refusal(verified(email)) == Reason.EMAIL_NOT_ALLOWED


@pytest.mark.parametrize("email", [None, 42, ["ann@example.com"], {"ann@example.com": True}, True])
def test_an_email_claim_that_is_not_a_string_is_refused(email: Any) -> None:
    rule = Require(email_domains=["example.com"])
    assert rule.refusal(verified(email)) == Reason.EMAIL_NOT_ALLOWED


def test_no_email_claim_at_all_is_refused() -> None:
    assert Require(email_domains=["example.com"]).refusal({"sub": "alice"}) == Reason.EMAIL_NOT_ALLOWED


@pytest.mark.parametrize(
    ("email", "allowed"),
    [
        ("ann@eu.example.com", True),
        ("ann@a.b.example.com", True),
        ("ANN@EU.EXAMPLE.COM", True),
        ("ann@example.com", False),  # `*.` is subdomains only
        ("ann@evilexample.com", False),
        ("ann@evil-example.com", False),
        ("ann@example.com.evil.test", False),
        ("ann@eu.example.com.evil.test", False),
    ],
)
def test_a_wildcard_domain_allows_subdomains_only(email: str, allowed: bool) -> None:
    rule = Require(email_domains=["*.example.com"])
    assert rule.refusal(verified(email)) == (None if allowed else Reason.EMAIL_NOT_ALLOWED)


def test_a_domain_and_its_wildcard_together_allow_both() -> None:
    rule = Require(email_domains=["example.com", "*.example.com"])
    assert rule.refusal(verified("ann@example.com")) is None
    assert rule.refusal(verified("ann@eu.example.com")) is None


# -- email addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "allowed"),
    [
        ("boss@partner.test", True),
        ("BOSS@Partner.TEST", True),
        ("xboss@partner.test", False),
        ("boss@partner.test.evil", False),
        ("boss@sub.partner.test", False),
        ("intern@partner.test", False),
        ("boss@partner.test@evil.test", False),
    ],
)
def test_allowed_addresses_match_whole_and_case_insensitively(email: str, allowed: bool) -> None:
    rule = Require(emails=[" Boss@Partner.test "])
    assert rule.emails == ("boss@partner.test",)
    assert rule.refusal(verified(email)) == (None if allowed else Reason.EMAIL_NOT_ALLOWED)


def test_an_address_or_a_domain_is_enough() -> None:
    rule = Require(email_domains=["example.com"], emails=["boss@partner.test"])
    assert rule.refusal(verified("ann@example.com")) is None
    assert rule.refusal(verified("boss@partner.test")) is None
    assert rule.refusal(verified("intern@partner.test")) == Reason.EMAIL_NOT_ALLOWED


# -- email_verified -----------------------------------------------------------------------------


@pytest.mark.parametrize("flag", [True, "true", "TRUE", "True"])
def test_a_verified_address_passes(flag: Any) -> None:
    claims = {"sub": "alice", "email": "ann@example.com", "email_verified": flag}
    assert Require(email_domains=["example.com"]).refusal(claims) is None


@pytest.mark.parametrize("flag", [False, "false", "False", 1, "1", "yes", "", None, "true ", ["true"], {"v": True}])
def test_an_address_not_verified_as_true_is_refused(flag: Any) -> None:
    claims = {"sub": "alice", "email": "ann@example.com", "email_verified": flag}
    assert Require(email_domains=["example.com"]).refusal(claims) == Reason.EMAIL_UNVERIFIED


def test_a_missing_email_verified_is_refused_even_for_an_allowed_address() -> None:
    claims = {"sub": "alice", "email": "boss@partner.test"}
    assert Require(emails=["boss@partner.test"]).refusal(claims) == Reason.EMAIL_UNVERIFIED


def test_an_unverified_address_outside_the_domains_reports_unverified() -> None:
    claims = {"sub": "alice", "email": "mallory@evil.test", "email_verified": "false"}
    assert Require(email_domains=["example.com"]).refusal(claims) == Reason.EMAIL_UNVERIFIED


def test_without_an_email_rule_the_address_is_not_looked_at() -> None:
    rule = Require(groups=["admins"])
    assert rule.refusal({"sub": "x", "email": 5, "email_verified": "no", "groups": ["admins"]}) is None


# -- groups -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("groups", "allowed"),
    [
        (["staff", "admins"], True),
        (("admins",), True),  # a session's claims hold lists as tuples
        ("admins", True),  # a single group as a string
        (["Admins"], False),  # group names are compared exactly
        (["admins "], False),
        ("admins staff", False),  # a string is one group, not a space-separated list
        ("xadmins", False),
        ([], False),
        (None, False),
        ({"admins": True}, False),
        ({"name": "admins"}, False),
        (1, False),
        (True, False),
        ([1, 2, None], False),
        ([["admins"]], False),  # nested, not a member
        ([{"name": "admins"}], False),  # unhashable members must not raise
        ([{"name": "x"}, "admins"], True),
        ([{"name": "x"}, 7], False),
    ],
)
def test_group_membership(groups: Any, allowed: bool) -> None:
    rule = Require(groups=["admins", "ops"])
    assert rule.refusal({"sub": "alice", "groups": groups}) == (None if allowed else Reason.GROUP_NOT_ALLOWED)


def test_no_groups_claim_is_refused() -> None:
    assert Require(groups=["admins"]).refusal({"sub": "alice"}) == Reason.GROUP_NOT_ALLOWED


def test_groups_are_read_from_a_dotted_path() -> None:
    rule = Require(groups=["admins"], groups_claim="realm_access.roles")
    assert rule.refusal({"sub": "a", "realm_access": {"roles": ["admins"]}}) is None
    assert rule.refusal({"sub": "a", "realm_access": {"roles": ["users"]}}) == Reason.GROUP_NOT_ALLOWED
    assert rule.refusal({"sub": "a", "realm_access": ["admins"]}) == Reason.GROUP_NOT_ALLOWED
    assert rule.refusal({"sub": "a", "realm_access": "admins"}) == Reason.GROUP_NOT_ALLOWED
    assert rule.refusal({"sub": "a", "groups": ["admins"]}) == Reason.GROUP_NOT_ALLOWED  # not the default claim


def test_groups_from_session_claims_frozen_by_the_session() -> None:
    # What a session holds: read-only mappings, and tuples for lists.
    claims = kept({"sub": "a", "realm_access": {"roles": ["admins"]}, "groups": ["ops"]})
    assert Require(groups=["admins"], groups_claim="realm_access.roles").refusal(claims) is None
    assert Require(groups=["ops"]).refusal(claims) is None
    assert Require(groups=["admins"]).refusal(claims) == Reason.GROUP_NOT_ALLOWED


def test_a_namespaced_claim_is_read_whole_before_as_a_path() -> None:
    name = "https://x.example/roles"
    rule = Require(groups=["admins"], groups_claim=name)
    assert rule.refusal({"sub": "a", name: ["admins"]}) is None
    # `https://x` then `example/roles` as a path finds nothing, and must not find something else.
    assert rule.refusal({"sub": "a", "https://x": {"example/roles": ["users"]}}) == Reason.GROUP_NOT_ALLOWED


def test_a_whole_claim_name_shadows_the_path_of_the_same_spelling() -> None:
    claims = {"realm_access.roles": ["users"], "realm_access": {"roles": ["admins"]}}
    assert claim_at(claims, "realm_access.roles") == ["users"]
    assert Require(groups=["admins"], groups_claim="realm_access.roles").refusal(claims) == Reason.GROUP_NOT_ALLOWED


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("groups", ["g"]),
        ("a.b.c", 3),
        ("a.b", {"c": 3}),
        ("a.x", None),
        ("a.b.c.d", None),  # through a number
        ("s.0", None),  # through a list: no indexing
        ("missing", None),
        ("a..b", None),
        ("https://x.example/roles", ["r"]),
    ],
)
def test_claim_at(path: str, expected: Any) -> None:
    claims = {"groups": ["g"], "a": {"b": {"c": 3}}, "s": ["x"], "https://x.example/roles": ["r"]}
    assert claim_at(claims, path) == expected


# -- step-up: acr and max_age -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("acr", "reason"),
    [
        ("mfa", None),
        ("phr", None),
        ("pwd", Reason.ACR_NOT_ALLOWED),
        ("MFA", Reason.ACR_NOT_ALLOWED),  # acr values are compared exactly
        ("mfa ", Reason.ACR_NOT_ALLOWED),
        ("", Reason.ACR_NOT_ALLOWED),
        (None, Reason.ACR_NOT_ALLOWED),
        (0, Reason.ACR_NOT_ALLOWED),
        (["mfa"], Reason.ACR_NOT_ALLOWED),  # unhashable: must refuse, not raise
        (("mfa",), Reason.ACR_NOT_ALLOWED),
        ({"mfa": 1}, Reason.ACR_NOT_ALLOWED),
    ],
)
def test_acr_must_be_one_of_the_values(acr: Any, reason: Reason | None) -> None:
    rule = Require(acr_values=["mfa", "phr"])
    assert rule.step_up_reason({"sub": "a", "acr": acr}, now=NOW, leeway=60) == reason


def test_a_missing_acr_asks_for_a_step_up() -> None:
    assert Require(acr_values=["mfa"]).step_up_reason({"sub": "a"}, now=NOW, leeway=0) == Reason.ACR_NOT_ALLOWED


@pytest.mark.parametrize(
    ("age", "leeway", "reason"),
    [
        (0, 0, None),
        (300, 0, None),  # exactly max_age old
        (301, 0, Reason.LOGIN_TOO_OLD),
        (360, 60, None),  # max_age plus the leeway
        (361, 60, Reason.LOGIN_TOO_OLD),
        (360.5, 60, Reason.LOGIN_TOO_OLD),
        (-30, 60, None),  # a provider clock a little ahead
        (-61, 60, Reason.LOGIN_TOO_OLD),  # a login in the future dates nothing
    ],
)
def test_max_age_against_auth_time_with_the_leeway(age: float, leeway: int, reason: Reason | None) -> None:
    rule = Require(max_age=300)
    auth_time: float = NOW - age
    if auth_time == int(auth_time):
        auth_time = int(auth_time)
    assert rule.step_up_reason({"sub": "a", "auth_time": auth_time}, now=NOW, leeway=leeway) == reason


@pytest.mark.parametrize(
    "auth_time",
    [
        True,
        False,
        str(int(NOW)),
        None,
        [int(NOW)],
        {"t": int(NOW)},
        float("nan"),
        float("inf"),
        float("-inf"),
        10**400,  # JSON allows any integer; no float holds it
        -(10**400),
        -1,
    ],
)
def test_an_auth_time_that_dates_no_login_is_too_old(auth_time: Any) -> None:
    rule = Require(max_age=10**9)
    assert rule.step_up_reason({"sub": "a", "auth_time": auth_time}, now=NOW, leeway=300) == Reason.LOGIN_TOO_OLD


def test_a_missing_auth_time_is_too_old() -> None:
    assert Require(max_age=3600).step_up_reason({"sub": "a"}, now=NOW, leeway=60) == Reason.LOGIN_TOO_OLD


def test_max_age_zero_allows_a_login_within_the_leeway() -> None:
    rule = Require(max_age=0)
    assert rule.step_up_reason({"auth_time": int(NOW) - 10}, now=NOW, leeway=60) is None
    assert rule.step_up_reason({"auth_time": int(NOW) - 10}, now=NOW, leeway=0) == Reason.LOGIN_TOO_OLD


def test_acr_is_checked_before_max_age() -> None:
    rule = Require(acr_values=["mfa"], max_age=60)
    assert rule.step_up_reason({"acr": "pwd"}, now=NOW, leeway=0) == Reason.ACR_NOT_ALLOWED
    assert rule.step_up_reason({"acr": "mfa"}, now=NOW, leeway=0) == Reason.LOGIN_TOO_OLD
    assert rule.step_up_reason({"acr": "mfa", "auth_time": int(NOW)}, now=NOW, leeway=0) is None


# -- check(): what the middleware answers -------------------------------------------------------


def test_check_refuses_with_access_denied_before_any_step_up() -> None:
    rule = Require(groups=["admins"], acr_values=["mfa"], max_age=60)
    refusal = rule.check({"sub": "alice", "groups": ["users"]}, now=NOW, leeway=0)
    assert isinstance(refusal, AccessDenied)
    assert (refusal.error, refusal.status_code) == (Reason.GROUP_NOT_ALLOWED, 403)
    assert refusal.detail == "sub='alice'"
    assert refusal.message == "Your account is not in a group that may use this page."


def test_check_asks_for_a_step_up_with_what_the_rule_needs() -> None:
    rule = Require(groups=["admins"], acr_values=["mfa", "phr"], max_age=60)
    refusal = rule.check({"sub": "alice", "groups": ["admins"], "acr": "pwd"}, now=NOW, leeway=0)
    assert isinstance(refusal, StepUpRequired)
    assert (refusal.error, refusal.status_code) == (Reason.ACR_NOT_ALLOWED, 401)
    assert (refusal.acr_values, refusal.max_age) == (("mfa", "phr"), 60)
    assert refusal.detail == "sub='alice'"


def test_check_lets_a_user_meeting_every_kind_in() -> None:
    rule = Require(email_domains=["example.com"], groups=["admins"], acr_values=["mfa"], max_age=60)
    claims = verified("ann@example.com", groups="admins", acr="mfa", auth_time=int(NOW) - 30)
    assert rule.check(claims, now=NOW, leeway=0) is None


def test_an_empty_rule_lets_everyone_in() -> None:
    rule = Require()
    assert not rule.restricts
    assert rule.check({}, now=NOW, leeway=0) is None


@pytest.mark.parametrize(
    "rule",
    [
        Require(email_domains=["example.com"]),
        Require(emails=["a@example.com"]),
        Require(groups=["g"]),
        Require(acr_values=["mfa"]),
        Require(max_age=0),
    ],
)
def test_each_kind_restricts(rule: Require) -> None:
    assert rule.restricts


@pytest.mark.parametrize(
    "rule",
    [Require(email_domains=[], emails=[], groups=[], acr_values=[]), Require(groups_claim="roles")],
)
def test_empty_kinds_and_a_claim_name_alone_restrict_nothing(rule: Require) -> None:
    assert not rule.restricts
    assert rule.check({"sub": "a"}, now=NOW, leeway=0) is None


# -- the verdict remembered per session ---------------------------------------------------------


def test_the_verdict_is_remembered_for_a_read_only_mapping_and_not_for_a_dict() -> None:
    rule = Require(groups=["admins"])
    frozen = MappingProxyType({"sub": "a", "groups": ("admins",)})
    assert rule.refusal(frozen) is None
    assert rule.refusal(frozen) is None

    plain: dict[str, Any] = {"sub": "a", "groups": ["admins"]}
    assert rule.refusal(plain) is None
    plain["groups"] = ["users"]  # a dict can change between checks, so it is checked again
    assert rule.refusal(plain) == Reason.GROUP_NOT_ALLOWED


def test_two_sessions_with_equal_looking_claims_get_their_own_verdicts() -> None:
    rule = Require(groups=["admins"])
    for _ in range(3):
        admin = MappingProxyType({"sub": "a", "groups": ("admins",)})
        user = MappingProxyType({"sub": "b", "groups": ("users",)})
        assert rule.refusal(admin) is None
        assert rule.refusal(user) == Reason.GROUP_NOT_ALLOWED


def test_the_remembered_verdicts_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from pkce_middleware import _rules

    monkeypatch.setattr(_rules, "_MAX_VERDICTS", 8)
    rule = Require(groups=["admins"])
    kept = [MappingProxyType({"sub": str(i), "groups": ("admins",) if i % 2 else ()}) for i in range(50)]
    for i, claims in enumerate(kept):
        assert rule.refusal(claims) == (None if i % 2 else Reason.GROUP_NOT_ALLOWED)
    assert len(rule._verdicts) <= 8
    for i, claims in enumerate(kept):  # still right after being dropped
        assert rule.refusal(claims) == (None if i % 2 else Reason.GROUP_NOT_ALLOWED)


# -- building a Require -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["email_domains", "emails", "groups", "acr_values"])
def test_one_string_instead_of_a_list_is_refused(kind: str) -> None:
    with pytest.raises(TypeError, match="not one string"):
        Require(**{kind: "admins"})  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["email_domains", "emails", "groups", "acr_values"])
@pytest.mark.parametrize("value", [[1], [None], [b"admins"], ["ok", 2]])
def test_items_that_are_not_strings_are_refused(kind: str, value: list[Any]) -> None:
    with pytest.raises(TypeError, match="list of strings"):
        Require(**{kind: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["email_domains", "emails", "groups", "acr_values"])
@pytest.mark.parametrize("value", [[""], ["  "], ["ok", ""]])
def test_empty_items_are_refused(kind: str, value: list[str]) -> None:
    with pytest.raises(ValueError, match="non-empty strings"):
        Require(**{kind: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "domain",
    [
        "*.com",
        ".com",
        "com",
        "*",
        "*.",
        "ann@example.com",
        "@example.com",
        "*.*.example.com",
        "ex*ample.com",
        "a/b.com",
    ],
)
def test_a_domain_that_is_no_domain_is_refused(domain: str) -> None:
    with pytest.raises(ValueError, match="is not a domain"):
        Require(email_domains=[domain])


@pytest.mark.parametrize("email", ["ann", "ann@b@example.com", "@example.com", "ann.example.com"])
def test_an_address_that_is_no_address_is_refused(email: str) -> None:
    with pytest.raises(ValueError, match="whole addresses"):
        Require(emails=[email])


@pytest.mark.parametrize("acr", ["a b", 'a"b', "a\\b", "a\tb", "a\nb", "\x00"])
def test_an_acr_value_that_cannot_be_sent_is_refused(acr: str) -> None:
    with pytest.raises(ValueError, match="acr_values"):
        Require(acr_values=[acr])


@pytest.mark.parametrize("claim", ["", ".", "..."])
def test_a_groups_claim_must_name_a_claim(claim: str) -> None:
    with pytest.raises(ValueError, match="groups_claim"):
        Require(groups_claim=claim)


@pytest.mark.parametrize("max_age", [-1, True, False, 1.5, 10**9 + 1, "60"])
def test_max_age_must_be_whole_seconds(max_age: Any) -> None:
    with pytest.raises(ValueError, match="max_age"):
        Require(max_age=max_age)


def test_values_are_normalised_once() -> None:
    rule = Require(
        email_domains=[" Example.COM ", "*.EU.Example.com"],
        emails=["Ann@Example.com"],
        groups=[" Admins "],
        acr_values=[" urn:mace:incommon:iap:silver "],
    )
    assert rule.email_domains == ("example.com", "*.eu.example.com")
    assert rule.emails == ("ann@example.com",)
    assert rule.groups == ("Admins",)  # trimmed, but group names keep their case
    assert rule.acr_values == ("urn:mace:incommon:iap:silver",)


def test_require_is_frozen() -> None:
    import dataclasses

    rule = Require(groups=["admins"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.groups = ["anyone"]  # type: ignore[misc]


# -- a path rule over the global one ------------------------------------------------------------


def test_a_path_rule_inherits_every_kind_it_leaves_unset() -> None:
    base = Require(email_domains=["example.com"], groups=["staff"], groups_claim="roles", acr_values=["pwd"])
    merged = Require(max_age=60).over(base)
    assert merged == Require(
        email_domains=["example.com"], groups=["staff"], groups_claim="roles", acr_values=["pwd"], max_age=60
    )


def test_a_path_rule_overrides_the_kinds_it_sets() -> None:
    base = Require(email_domains=["example.com"], groups=["staff"], acr_values=["pwd"])
    merged = Require(groups=["admins"], groups_claim="realm_access.roles", acr_values=["mfa"]).over(base)
    assert merged.groups == ("admins",)
    assert merged.groups_claim == "realm_access.roles"
    assert merged.acr_values == ("mfa",)
    assert merged.email_domains == ("example.com",)


def test_an_empty_list_lifts_a_kind() -> None:
    base = Require(email_domains=["example.com"], emails=["boss@partner.test"], groups=["staff"])
    merged = Require(email_domains=[], groups=[]).over(base)
    assert not merged.restricts
    assert merged.refusal({"sub": "x", "email": "anyone@anywhere.test"}) is None


def test_emails_and_domains_are_one_kind_on_a_path() -> None:
    # Naming addresses on a path replaces the global domains there too.
    merged = Require(emails=["boss@partner.test"]).over(Require(email_domains=["example.com"]))
    assert merged.email_domains == ()
    assert merged.refusal(verified("boss@partner.test")) is None
    assert merged.refusal(verified("ann@example.com")) == Reason.EMAIL_NOT_ALLOWED


def test_the_global_groups_claim_holds_where_the_path_names_none() -> None:
    merged = Require(groups=["admins"]).over(Require(groups_claim="realm_access.roles"))
    assert merged.refusal({"sub": "a", "realm_access": {"roles": ["admins"]}}) is None


# -- which rule a path gets ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/admin", "/admin"),
        ("/admin/../public", "/public"),
        ("/public/../admin", "/admin"),
        ("//admin", "/admin"),
        ("///admin//x", "/admin/x"),
        ("/admin/", "/admin/"),
        ("/admin/./", "/admin/"),
        ("/admin/.", "/admin"),
        ("/admin/x/..", "/admin"),
        ("/..", "/"),
        ("/../admin", "/admin"),
        ("/.", "/"),
        ("/", "/"),
        ("/a.b/c.d", "/a.b/c.d"),  # dots inside names are no dot segments
        ("/.well-known/x", "/.well-known/x"),
        ("/admin/..x", "/admin/..x"),
    ],
)
def test_rule_path(path: str, expected: str) -> None:
    assert rule_path(path) == expected


ADMINS = Require(groups=["admins"])
PUBLIC = Require(groups=[])  # lifts the global group rule


def rules() -> Rules:
    return Rules(
        Require(groups=["staff"]),
        {"/admin": ADMINS, "/admin/keys/": Require(acr_values=["mfa"]), "/public": PUBLIC},
    )


@pytest.mark.parametrize(
    ("path", "groups"),
    [
        ("/admin", ("admins",)),
        ("/admin/", ("admins",)),
        ("/admin/users", ("admins",)),
        ("/admin/keys", ("staff",)),  # its own prefix, merged over the global rule (not over /admin's)
        ("/administrator", ("staff",)),  # a prefix counts at segment boundaries only
        ("/admin-panel", ("staff",)),
        ("/adminx/y", ("staff",)),
        ("/Admin", ("staff",)),  # paths are case-sensitive, as routers are
        ("/", ("staff",)),
        ("/other/admin", ("staff",)),
        ("//admin", ("admins",)),
        ("/public/../admin", ("admins",)),
        ("/public/./../admin/x", ("admins",)),
    ],
)
def test_the_longest_matching_prefix_wins(path: str, groups: tuple[str, ...]) -> None:
    rule = rules().for_path(path)
    assert rule is not None
    assert rule.groups == groups


def test_a_longer_prefix_is_merged_over_the_global_rule_not_the_shorter_prefix() -> None:
    rule = rules().for_path("/admin/keys/new")
    assert rule is not None
    assert rule.acr_values == ("mfa",)
    assert rule.groups == ("staff",)  # the global kind: a path rule never inherits a shorter path rule


def test_a_path_rule_that_lifts_everything_lets_everyone_in() -> None:
    assert rules().for_path("/public") is None
    assert rules().for_path("/public/x") is None
    assert rules().for_path("/admin/../public") is None


def test_dot_segments_must_pass_the_rule_of_the_path_as_sent_and_as_resolved() -> None:
    all_rules = rules()
    # Starlette's Mount("/admin") serves /admin/../public: the /admin rule must still hold.
    assert [r.groups for r in all_rules.for_request("/admin/../public")] == [("admins",)]
    assert [r.groups for r in all_rules.for_request("/public/../admin")] == [("admins",)]
    assert [r.groups for r in all_rules.for_request("/admin/../other")] == [("staff",), ("admins",)]
    assert [r.groups for r in all_rules.for_request("//admin")] == [("admins",), ("staff",)]
    assert [r.groups for r in all_rules.for_request("/admin/x")] == [("admins",)]
    assert all_rules.for_request("/public/x") == ()


def test_without_path_rules_every_path_gets_the_global_rule() -> None:
    base = Require(email_domains=["example.com"])
    only_global = Rules(base, {})
    assert only_global.active
    assert only_global.for_path("/admin/../x") is base
    assert only_global.for_request("//x") == (base,)


def test_nothing_to_check_turns_the_rules_off() -> None:
    assert not Rules(Require(), {}).active
    assert not Rules(Require(), {"/x": Require(groups=[])}).active
    assert Rules(Require(), {"/x": Require(max_age=0)}).active
    assert Rules(Require(), {}).for_request("/x") == ()


def test_a_root_path_rule_covers_everything_but_longer_prefixes() -> None:
    all_rules = Rules(Require(), {"/": Require(groups=["users"]), "/admin": ADMINS})
    assert all_rules.for_path("/anything") == Require(groups=["users"])
    assert all_rules.for_path("/admin/x") == ADMINS


def test_a_trailing_slash_on_a_prefix_changes_nothing() -> None:
    all_rules = Rules(Require(), {"/admin/": ADMINS})
    assert all_rules.for_path("/admin") == ADMINS
    assert all_rules.for_path("/admin/x") == ADMINS
    assert all_rules.for_path("/administrator") is None


@pytest.mark.parametrize("prefix", ["admin", "//admin", "/admin?x=1", "/admin#x", "", "https://evil.test/admin"])
def test_a_prefix_must_be_an_absolute_path(prefix: str) -> None:
    with pytest.raises(ValueError, match="absolute path"):
        Rules(Require(), {prefix: ADMINS})


def test_a_path_rule_must_be_a_require() -> None:
    with pytest.raises(TypeError, match="must be a Require"):
        Rules(Require(), {"/admin": {"groups": ["admins"]}})  # type: ignore[dict-item]


# -- the options ----------------------------------------------------------------------------------


def environ(**options: str) -> dict[str, str]:
    return {
        "PKCE_ISSUER": ISSUER,
        "PKCE_CLIENT_ID": CLIENT_ID,
        "PKCE_SECRET_KEY": strong_secret_key(),
        **{f"PKCE_{name.upper()}": value for name, value in options.items()},
    }


def test_the_rule_options_default_to_no_rule() -> None:
    config = PKCEConfig.from_environ(environ())
    assert (config.allowed_email_domains, config.allowed_emails, config.allowed_groups) == ((), (), ())
    assert (config.groups_claim, config.acr_values) == ("groups", ())
    assert not config.require.restricts


def test_the_rule_options_are_read_from_the_environment() -> None:
    config = PKCEConfig.from_environ(
        environ(
            allowed_email_domains="Example.com, *.corp.example.com",
            allowed_emails="Boss@Partner.test",
            allowed_groups="admins,ops",
            groups_claim="realm_access.roles",
            acr_values="urn:acr:mfa,phr",
        )
    )
    assert config.allowed_email_domains == ("example.com", "*.corp.example.com")
    assert config.allowed_emails == ("boss@partner.test",)
    assert config.allowed_groups == ("admins", "ops")
    assert config.groups_claim == "realm_access.roles"
    assert config.acr_values == ("urn:acr:mfa", "phr")
    assert config.require == Require(
        email_domains=["example.com", "*.corp.example.com"],
        emails=["boss@partner.test"],
        groups=["admins", "ops"],
        groups_claim="realm_access.roles",
        acr_values=["urn:acr:mfa", "phr"],
    )
    claims = {
        "sub": "a",
        "email": "ann@eu.corp.example.com",
        "email_verified": True,
        "realm_access": {"roles": ["ops"]},
        "acr": "phr",
    }
    assert config.require.check(claims, now=time.time(), leeway=60) is None


@pytest.mark.parametrize("value", ["", "  ", ",", " , "])
def test_an_empty_list_option_is_no_rule(value: str) -> None:
    config = PKCEConfig.from_environ(
        environ(allowed_email_domains=value, allowed_emails=value, allowed_groups=value, acr_values=value)
    )
    assert config.allowed_email_domains == config.allowed_emails == config.allowed_groups == config.acr_values == ()
    assert not config.require.restricts


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_groups_claim_is_the_default(value: str) -> None:
    assert PKCEConfig.from_environ(environ(groups_claim=value)).groups_claim == "groups"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PKCE_ALLOWED_EMAIL_DOMAINS", "*.com"),
        ("PKCE_ALLOWED_EMAIL_DOMAINS", "example.com,ann@example.com"),
        ("PKCE_ALLOWED_EMAIL_DOMAINS", "com"),
        ("PKCE_ALLOWED_EMAILS", "ann"),
        ("PKCE_ALLOWED_EMAILS", "ann@example.com,@example.com"),
        ("PKCE_ALLOWED_EMAILS", "a@b@example.com"),
        ("PKCE_GROUPS_CLAIM", "..."),
        ("PKCE_ACR_VALUES", "urn:a urn:b"),
        ("PKCE_ACR_VALUES", '"mfa strong"'),  # quoted, one value with a space
        ("PKCE_ACR_VALUES", 'mfa"'),  # not even a list
    ],
)
def test_a_bad_rule_option_is_a_config_error_naming_the_variable(variable: str, value: str) -> None:
    values = environ()
    values[variable] = value
    with pytest.raises(ConfigError) as caught:
        PKCEConfig.from_environ(values)
    assert str(caught.value).startswith(f"{variable} ") or str(caught.value).startswith(f"{variable}: ")
    assert caught.value.error == Reason.CONFIG_ERROR


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("allowed_groups", "admins", "PKCE_ALLOWED_GROUPS"),
        ("allowed_email_domains", ["example.com", 3], "PKCE_ALLOWED_EMAIL_DOMAINS"),
        ("allowed_emails", [""], "PKCE_ALLOWED_EMAILS"),
        ("acr_values", ["a b"], "PKCE_ACR_VALUES"),
        ("groups_claim", "", "PKCE_GROUPS_CLAIM"),
    ],
)
def test_a_bad_rule_option_in_code_names_the_variable_too(field: str, value: Any, variable: str) -> None:
    with pytest.raises(ConfigError, match=f"^{variable}: "):
        PKCEConfig(issuer=ISSUER, client_id=CLIENT_ID, secret_key=strong_secret_key(), **{field: value})


def test_rule_options_given_as_lists_in_code_are_kept_as_tuples() -> None:
    config = PKCEConfig(
        issuer=ISSUER,
        client_id=CLIENT_ID,
        secret_key=strong_secret_key(),
        allowed_email_domains=["EXAMPLE.com"],  # type: ignore[arg-type]
        allowed_groups=["admins"],  # type: ignore[arg-type]
    )
    assert config.allowed_email_domains == ("example.com",)
    assert config.allowed_groups == ("admins",)
    hash(config)  # still a frozen, hashable configuration


def test_the_options_are_in_the_option_table() -> None:
    variables = [row[0] for row in PKCEConfig.options()]
    for variable in (
        "PKCE_ALLOWED_EMAIL_DOMAINS",
        "PKCE_ALLOWED_EMAILS",
        "PKCE_ALLOWED_GROUPS",
        "PKCE_GROUPS_CLAIM",
        "PKCE_ACR_VALUES",
    ):
        assert variable in variables


def test_a_unicode_lookalike_of_an_allowed_domain_is_refused() -> None:
    # "\u212a" (Kelvin sign) lowers to "k" with str.lower: another domain to the provider.
    rule = Require(email_domains=["kpmg.com"])
    assert rule.refusal({"email": "x@\u212apmg.com", "email_verified": True}) == Reason.EMAIL_NOT_ALLOWED
    assert rule.refusal({"email": "x@KPMG.com", "email_verified": True}) is None
