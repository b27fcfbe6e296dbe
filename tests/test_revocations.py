"""Logouts of cookie sessions remembered in memory (`MemoryRevocations`): what they cover, how long.

Issue #10, finding 6: a logout must not be forgotten because others came after it (anyone who can
log in can log out many times); it is kept until the session it ends has expired anyway, and a
list that grows past its soft cap says so. Finding 2 (the part decided here): `id:` and `sid:`
logouts compare no clocks, and a `sub:` logout errs on the side of ending a session.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from typing import Any

import pytest

from pkce_middleware._revocations import SKEW_MARGIN, MemoryRevocations
from pkce_middleware._session import Session

NOW = 1_800_000_000.0
MAX_AGE = 3600


def session(*, created_at: float = NOW - 60, sub: str = "alice", sid: str | None = None) -> Session:
    claims: dict[str, Any] = {"sub": sub}
    if sid is not None:
        claims["sid"] = sid
    return Session(
        id=secrets.token_urlsafe(24),
        claims=claims,
        access_token="at",
        id_token="",
        refresh_token=None,
        access_expires_at=None,
        scopes=("openid",),
        created_at=created_at,
        expires_at=int(created_at) + MAX_AGE,
        last_seen=int(created_at),
    )


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def soft_cap_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.levelno == logging.WARNING and "reason=revocation_soft_cap" in record.getMessage()
    ]


# -- finding 6: nothing is forgotten because of what came after -----------------------------------------


async def test_a_logout_outlives_100000_later_logouts(caplog: pytest.LogCaptureFixture) -> None:
    revocations = MemoryRevocations(max_age=MAX_AGE)
    victim = session()
    await revocations.add(f"id:{victim.id}", NOW)
    # An attacker with a cookie logs out (or logs in and out) over and over.
    for n in range(100_000):
        await revocations.add(f"id:flood-{n}", NOW + 1)
    assert revocations.covers(victim), "the victim's logout was forgotten"
    # Said loudly, once, with a counter for metrics; nothing dropped.
    [warning] = soft_cap_warnings(caplog)
    assert "revoked sessions" in warning.getMessage() and "nothing dropped" in warning.getMessage()
    assert revocations.ended.soft_cap_crossings == 1 and revocations.soft_cap_crossings == 1
    assert len(revocations.ended) == 100_001


async def test_a_used_logout_token_id_outlives_100000_later_ones() -> None:
    revocations = MemoryRevocations(max_age=MAX_AGE)
    assert await revocations.claim_jti("replayed", ttl=MAX_AGE) is True
    for n in range(100_000):
        assert await revocations.claim_jti(f"flood-{n}", ttl=MAX_AGE) is True
    assert await revocations.claim_jti("replayed", ttl=MAX_AGE) is False, "a used logout token id was forgotten"
    assert revocations.jtis.soft_cap_crossings == 1


async def test_an_entry_is_dropped_only_once_the_sessions_it_covers_have_expired() -> None:
    clock = Clock()
    revocations = MemoryRevocations(max_age=100, skew_margin=5, clock=clock)
    kept_for = 100 + 2 * 5  # max_age, plus the margin on each side: see MemoryRevocations.entry_ttl
    assert revocations.entry_ttl == kept_for
    victim = session(created_at=NOW - 1)
    await revocations.add(f"id:{victim.id}", NOW)
    clock.now += kept_for - 0.5
    await revocations.add("id:later", NOW + kept_for)  # pruning happens on add
    assert revocations.covers(victim)
    clock.now += 1
    await revocations.add("id:even-later", NOW + kept_for + 1)
    assert not revocations.covers(victim)
    assert len(revocations.ended) == 2


async def test_an_entry_added_again_keeps_the_later_deadline() -> None:
    clock = Clock()
    revocations = MemoryRevocations(max_age=100, skew_margin=0, clock=clock)
    await revocations.add("sub:alice", NOW)
    clock.now += 60
    await revocations.add("sub:alice", NOW + 60)
    clock.now += 60  # past the first deadline, not the second
    await revocations.add("id:other", NOW + 120)
    assert revocations.ended.at("sub:alice") == NOW + 60
    # A received entry already `age` seconds old is kept for what is left of its time only.
    revocations.record("id:stale", NOW, age=100.5)
    assert "id:stale" not in revocations.ended


async def test_the_soft_cap_warns_once_per_crossing_and_drops_nothing(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    revocations = MemoryRevocations(max_age=100, skew_margin=0, soft_cap=10, clock=clock)
    for n in range(15):
        await revocations.add(f"id:first-{n}", NOW)
    assert len(soft_cap_warnings(caplog)) == 1
    assert all(f"id:first-{n}" in revocations.ended for n in range(15))
    # Once the old entries have expired the list is small again, and a new crossing is reported.
    clock.now += 101
    for n in range(10):
        await revocations.add(f"id:second-{n}", NOW + 101)
    assert len(revocations.ended) == 10
    assert len(soft_cap_warnings(caplog)) == 2
    assert revocations.ended.soft_cap_crossings == 2


async def test_logout_token_ids_are_kept_for_their_ttl() -> None:
    clock = Clock()
    revocations = MemoryRevocations(max_age=MAX_AGE, clock=clock)
    assert await revocations.claim_jti("j1", ttl=60) is True
    clock.now += 59
    assert await revocations.claim_jti("j1", ttl=60) is False
    clock.now += 2
    assert await revocations.claim_jti("j2", ttl=60) is True  # prunes j1
    assert await revocations.claim_jti("j1", ttl=60) is True


# -- finding 2: which clocks a logout compares ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["id", "sid"])
async def test_a_session_or_sid_logout_covers_it_whatever_the_two_hosts_clocks(kind: str) -> None:
    # Created on a host whose clock is 1.5 s ahead, logged out 0.5 s later on a host whose clock
    # is right: the logout is stamped 1 s *before* the session's creation.
    ended = session(created_at=NOW + 1.5, sid="op-1")
    revocations = MemoryRevocations(max_age=MAX_AGE)
    await revocations.add(f"id:{ended.id}" if kind == "id" else "sid:op-1", NOW + 0.5)
    assert revocations.covers(ended)
    assert not revocations.covers(session(created_at=NOW - 60, sid="op-2"))


async def test_a_sub_logout_covers_every_session_created_up_to_the_skew_margin_after_it() -> None:
    revocations = MemoryRevocations(max_age=MAX_AGE)
    await revocations.add("sub:alice", NOW)
    assert revocations.covers(session(created_at=NOW - 3000))
    # Created before the logout on a host whose clock runs ahead (up to the margin).
    assert revocations.covers(session(created_at=NOW + 1.5))
    assert revocations.covers(session(created_at=NOW + SKEW_MARGIN - 0.01))
    # A login well after the logout is a new session and stays.
    assert not revocations.covers(session(created_at=NOW + SKEW_MARGIN + 0.01))
    assert not revocations.covers(session(created_at=NOW + 1.5, sub="bob"))


async def test_the_skew_margin_can_be_chosen() -> None:
    revocations = MemoryRevocations(max_age=MAX_AGE, skew_margin=0)
    await revocations.add("sub:alice", NOW)
    assert revocations.covers(session(created_at=NOW))
    assert not revocations.covers(session(created_at=NOW + 0.01))


async def test_a_session_changed_after_a_lookup_is_looked_up_by_its_new_names() -> None:
    # The names a session is looked up by are kept with it (every request of a cookie shares one
    # Session); a refresh that brings another `sid` makes a new Session, which must not inherit them.
    revocations = MemoryRevocations(max_age=MAX_AGE)
    await revocations.add("sid:op-2", NOW)
    before = session(sid="op-1")
    assert not revocations.covers(before)
    after = dataclasses.replace(before, claims={"sub": "alice", "sid": "op-2"})
    assert revocations.covers(after)
    assert not revocations.covers(before)
