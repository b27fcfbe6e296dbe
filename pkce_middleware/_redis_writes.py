"""How the Redis store writes sessions: the Lua scripts, and the sequences that replace them on a Cluster.

A stored session is `<digest of its tokens>!<sealed session>` (`fingerprint`, `sealed_part`); the
scripts below say why. On one server a save is one script (the session, its index sets and the
announcement to the other processes' caches, atomically); on a Redis Cluster, where a script may
touch one hash slot only, `write_across_slots` and `delete_across_slots` run the same steps as
single-slot commands, in an order that keeps a back-channel logout from missing a session.
"""

from __future__ import annotations

import hashlib

import redis.asyncio

from ._redis import text, unavailable
from ._redis_cache import CHANNEL, announcement
from ._session import Session

__all__: list[str] = []

# How a session is written, in both scripts below. A value is `<tokens>!<sealed session>`, where
# `<tokens>` is a digest of the session's tokens (`fingerprint`). An update (`update == "1"`) only
# replaces a session that still exists, so a request that loaded a session just before a logout or
# back-channel logout cannot bring it back by writing it; and only one with the tokens the writer
# started from (`expected`), so a request that loaded the session before another process
# refreshed it cannot undo the refresh by writing back its idle clock: the provider has rotated
# the old refresh token out, and restoring it would log the user out at the next refresh. Values
# written before there was a digest (no `!`) are replaced unconditionally, as they were.
# Returns 1 (written), 0 (gone) or 2 (superseded: newer tokens are there; nothing written).
PUT = """
local function put(key, value, ttl, update, expected)
  if update == '1' then
    local current = redis.call('GET', key)
    if not current then
      return 0
    end
    local mark = string.find(current, '!', 1, true)
    if mark and string.sub(current, 1, mark - 1) ~= expected then
      return 2
    end
  end
  redis.call('SET', key, value, 'EX', ttl)
  return 1
end
"""

# One round trip, atomic. A Lua script rather than MULTI because the write must be conditional
# (`PUT`). The index
# sets expire with their last member (EXPIREAT of the highest score), which a MULTI cannot compute,
# and this needs no Redis 7 `EXPIRE ... GT`. The change is announced to the other processes' session
# caches (`_redis_cache`) in the same script, so no write goes unannounced.
# KEYS[1]: session key; KEYS[2..]: index sets. ARGV: value, ttl, now, update-only flag, the
# invalidation channel, the expected token digest.
SAVE_SCRIPT = (
    PUT
    + """
local written = put(KEYS[1], ARGV[1], ARGV[2], ARGV[4], ARGV[6])
if written ~= 1 then
  return written
end
redis.call('PUBLISH', ARGV[5], 'k ' .. KEYS[1])
local expires = tonumber(ARGV[3]) + tonumber(ARGV[2])
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], expires, KEYS[1])
  if ARGV[4] ~= '1' then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[3])
  end
  local last = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  redis.call('EXPIREAT', KEYS[i], last[2])
end
return 1
"""
)

# `PUT` alone, for a Redis Cluster (see `INDEX_SCRIPT`). KEYS[1]: session key. ARGV: value, ttl,
# update-only flag, expected token digest.
PUT_SCRIPT = PUT + "return put(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])\n"

#: What `_write` found.
WRITTEN, GONE, SUPERSEDED = 1, 0, 2

# On a Redis Cluster a script may only touch keys of one hash slot, and a session's key and its
# index sets hash apart (the key is found from the cookie's id, an index from a `sid` or `sub`), so
# there `_write` runs this on each index set, then a plain SET. The index entry is written first:
# a back-channel logout that runs in between deletes a key not yet written, which is a logout
# that came before the login (as when the script runs after it); never a session the logout missed.
# KEYS[1]: an index set. ARGV: the session key, when it expires, now, update-only flag.
INDEX_SCRIPT = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if ARGV[4] ~= '1' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', KEYS[1], last[2])
return 1
"""


async def write_across_slots(
    client: redis.asyncio.Redis,
    key: str,
    value: str,
    indexes: list[str],
    *,
    ttl: int,
    now: int,
    update: str,
    expected: str,
) -> int:
    """`SAVE_SCRIPT` on a Redis Cluster: the index entries (see `INDEX_SCRIPT`), then the session."""
    # Registering only hashes the text; the script is loaded on a node when it first lacks it.
    script = client.register_script(INDEX_SCRIPT)
    for index in indexes:
        with unavailable("EVALSHA index"):
            await script(keys=[index], args=[key, now + ttl, now, update], client=client)
    # Written as in the script (`PUT`): a logout that ran after the index entry left an entry for a
    # key that is gone, pruned once it expires.
    with unavailable("EVALSHA put"):
        return int(
            await client.register_script(PUT_SCRIPT)(keys=[key], args=[value, ttl, update, expected], client=client)
        )


async def delete_across_slots(client: redis.asyncio.Redis, keys: list[str], members: dict[str, list[str]]) -> None:
    """The logout's MULTI on a Redis Cluster: delete the sessions `keys`, announce it, then drop
    `members` from their index sets; each a command of its own, in this order.

    The deletion comes first: if a later step fails (a 503, so the provider or the user tries again),
    the sessions are gone and, still listed, are found again. Announced only once deleted, so no
    process reads a session back into its cache after dropping it.
    """
    with unavailable("DEL"):
        # redis-py sends one DEL per hash slot.
        await client.delete(*keys)
    with unavailable("PUBLISH"):
        await client.publish(CHANNEL, announcement(keys))
    for index, names in members.items():
        with unavailable("ZREM"):
            await client.zrem(index, *names)


def fingerprint(session: Session) -> str:
    """A digest of the session's tokens, stored beside it in clear (see `PUT`): it names no token,
    and tokens are random enough that it cannot be turned back into one."""
    tokens = f"{session.access_token}\0{session.refresh_token or ''}"
    return hashlib.sha256(tokens.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def sealed_part(raw: bytes | str) -> str:
    """The sealed session of a stored value, with or without its token digest in front."""
    return text(raw).rpartition("!")[2]
