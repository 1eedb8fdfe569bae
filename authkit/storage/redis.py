"""``RedisStorage``: tokens, sessions and kv data in Redis or a Redis Cluster.

Usage::

    import redis
    from authkit.storage import RedisStorage, open_storage

    storage = open_storage("redis://localhost:6379/0", prefix="myapp:")
    storage = open_storage("redis://node1:7000", cluster=True)          # a Redis Cluster
    storage = open_storage("redis+sentinel://:pw@s1,s2,s3/mymaster/0")  # the master Sentinel names
    storage = RedisStorage(redis.Redis(host="localhost"), prefix="myapp:")

    storage.store_kv("greeting", b"hello", ttl=60)
    with storage.lock("nightly-cleanup", timeout=0):
        storage.cleanup_expired()

Layout (``B`` is the prefix plus one hash tag, e.g. ``authkit:{authkit}:``)::

    B t:<token_id>        string  the token as JSON (no TTL, or the safety-net TTL)
    B ta:<sha256(access)> string  token id: the access-token lookup (the raw token is never a key name)
    B tu:<user_id>        zset    token ids scored by expiry (microseconds since 1970, +inf = never)
    B tx                  zset    every token id scored by expiry: cleanup and stats
    B ti                  zset    every token id, score 0: paging by id (ZRANGEBYLEX)
    B to                  hash    token id -> "<digest><user_id>": what to unindex, even once
                                  the record itself is gone
    B s:<session_id>      string  the session as JSON, with a native TTL (PX)
    B su:<user_id>, B sx  zset    session ids scored by expiry
    B si, B so            zset, hash   as ti and to, for sessions (so: id -> user_id)
    B kv:<key>            string  8-byte expiry header + value, with a native TTL (PX)
    B kx                  zset    kv keys scored by expiry
    B lock:<name>         string  a lock holder's random token, with a PX TTL
    B incr                string  incr_kv's scratch key, only while its script runs

Every write that touches more than one key is one Lua script, so a record and
its indexes change together (atomically, also on a cluster: every key of one
storage has the same hash tag, so one hash slot).  Expiry is decided on read
with the storage's clock; Redis's own TTLs only reclaim memory.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.cluster
import redis.sentinel
from redis import exceptions as redis_errors

from authkit.errors import ConfigurationError, NotFoundError, StorageError, StorageUnavailableError
from authkit.models import AuthToken, CleanupReport, SessionData
from authkit.storage import _redis_sentinel as _sentinel
from authkit.storage._codec import counter_overflow, digest, dumps, live, loads, micros, moment, ttl_seconds
from authkit.storage._redact import url_secrets
from authkit.storage.base import CLEANUP_KINDS, AuthStorage, Clock

__all__ = ["RedisStorage"]

_HEADER = struct.Struct(">q")  # the kv expiry in microseconds; -1 = never
_NO_EXPIRY = -1
_FORMAT = 1  # first element of every stored JSON record, so the layout can evolve
_SCAN_COUNT = 1000
_MAX_RETENTION = 100 * 366 * 24 * 3600.0

# Errors that mean "the server cannot be reached (now)"; every other redis-py
# error is a plain StorageError.  RedisClusterException is not a RedisError:
# it is what the cluster client raises when no node answers.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.RedisClusterException,
    redis_errors.BusyLoadingError,
)


# -- Lua ------------------------------------------------------------------
#
# Scripts touch keys they derive from the base (old index entries whose names
# they read from the owner hash).  That is safe on a cluster because every key
# of a storage shares one hash tag: they are all in the slot of KEYS[1].
# Bulk work is batched (HMGET, MSET, ZADD of up to 1000 members per call),
# because per-record redis.call()s are what a 10,000-token bulk store costs.

_LUA_LIB = r"""
local CHUNK = 1000
local function each_chunk(items, width, fn)
  local step = CHUNK * width
  for i = 1, #items, step do fn(unpack(items, i, math.min(i + step - 1, #items))) end
end
local function hmget(hash, ids)
  local out = {}
  for i = 1, #ids, CHUNK do
    local got = redis.call('HMGET', hash, unpack(ids, i, math.min(i + CHUNK - 1, #ids)))
    for j = 1, #got do out[i + j - 1] = got[j] end
  end
  return out
end
-- The NUL-separated fields of `s`: n of them, the last one taking the rest
-- (a JSON record: ids hold no NUL, and JSON escapes it).
local function fields(s, n)
  local out, pos = {}, 1
  for k = 1, n - 1 do
    local e = string.find(s, '\0', pos, true)
    out[k] = string.sub(s, pos, e - 1)
    pos = e + 1
  end
  out[n] = string.sub(s, pos)
  return out
end
-- Forget the previous version of token `id` (owner = "<64 hex digest><user>")
-- where it differs from the new digest/user ('' = forget everything).
local function unindex_token(base, id, old, digest, user)
  if not old then return end
  local od, ou = string.sub(old, 1, 64), string.sub(old, 65)
  if od ~= digest then
    local ak = base .. 'ta:' .. od
    if redis.call('GET', ak) == id then redis.call('DEL', ak) end
  end
  if ou ~= user then redis.call('ZREM', base .. 'tu:' .. ou, id) end
end
local function unindex_session(base, id, old, user)
  if old and old ~= user then redis.call('ZREM', base .. 'su:' .. old, id) end
end
-- Delete the records `ids` of one kind ('t' or 's') and every index entry of them.
local function drop(base, kind, x, i, o, ids)
  if #ids == 0 then return end
  local olds = hmget(o, ids)
  local names = {}
  for n, id in ipairs(ids) do
    if kind == 't' then unindex_token(base, id, olds[n], '', '') else unindex_session(base, id, olds[n], '') end
    names[n] = base .. kind .. ':' .. id
  end
  each_chunk(names, 1, function(...) redis.call('DEL', ...) end)
  each_chunk(ids, 1, function(...) redis.call('ZREM', x, ...) redis.call('ZREM', i, ...) redis.call('HDEL', o, ...) end)
end
-- Index new versions: `adds` maps an index key to its flat {score, member, ...} list.
local function zadd_all(adds)
  for key, members in pairs(adds) do
    each_chunk(members, 2, function(...) redis.call('ZADD', key, ...) end)
  end
end
-- Is session `id` live at `now` (microseconds)?  Its record must exist (Redis may
-- have expired it) and its expiry index score be later than now.
local function session_live(base, sx, id, now)
  if redis.call('EXISTS', base .. 's:' .. id) == 0 then return false end
  local score = redis.call('ZSCORE', sx, id)
  return score ~= false and (score == 'inf' or tonumber(score) > tonumber(now))
end
-- Is the kv value (8-byte big-endian expiry header, all ones = never) live at `now`?
-- Expiries below 2^53 microseconds (year 2255) are exact as Lua numbers; later
-- ones only round, and stay later than any `now`.
local function kv_live(value, now)
  local header = string.sub(value, 1, 8)
  if header == '\255\255\255\255\255\255\255\255' then return true end
  local expires = 0
  for k = 1, 8 do expires = expires * 256 + string.byte(header, k) end
  return expires > tonumber(now)
end
local function push(t, key, score, member)
  local list = t[key]
  if not list then list = {}; t[key] = list end
  list[#list + 1] = score
  list[#list + 1] = member
end
"""

# KEYS: tx, ti, to.  ARGV: base, must_exist ('1' = update: the token must be stored),
# then one per token: "id NUL digest user NUL score NUL px NUL json" (px '' =
# no TTL).  One argument per token, not six: for a 10,000-token bulk store,
# packing and parsing 60,000 arguments cost more than the writes.
_STORE_TOKENS = _LUA_LIB + r"""
local base, tx, ti, to = ARGV[1], KEYS[1], KEYS[2], KEYS[3]
local find, sub = string.find, string.sub
local n, ids, owners, scores, pxs, jsons = 0, {}, {}, {}, {}, {}
for i = 3, #ARGV do
  local s = ARGV[i]
  local a = find(s, '\0', 1, true)
  local b = find(s, '\0', a + 66, true)  -- the owner: a 64-character digest, then the user id
  local c = find(s, '\0', b + 1, true)
  local d = find(s, '\0', c + 1, true)
  n = n + 1
  ids[n], owners[n], scores[n], pxs[n], jsons[n] = sub(s, 1, a - 1), sub(s, a + 1, b - 1), sub(s, b + 1, c - 1),
    sub(s, c + 1, d - 1), sub(s, d + 1)
end
if ARGV[2] == '1' and redis.call('EXISTS', base .. 't:' .. ids[1]) == 0 then return 0 end
local olds = hmget(to, ids)
local records, access, pairs_, byscore, byid, users = {}, {}, {}, {}, {}, {}
local nr, k = 0, 0
local tkey, akey, ukey = base .. 't:', base .. 'ta:', base .. 'tu:'
-- The records first: a write that fails (e.g. a refused PX) then leaves every
-- old index entry in place, never a token half unindexed.
for j = 1, n do
  if pxs[j] == '' then
    records[nr + 1], records[nr + 2] = tkey .. ids[j], jsons[j]
    nr = nr + 2
  else
    redis.call('SET', tkey .. ids[j], jsons[j], 'PX', pxs[j])
  end
end
each_chunk(records, 2, function(...) redis.call('MSET', ...) end)
for j = 1, n do
  local id, owner, score = ids[j], owners[j], scores[j]
  local old = olds[j]
  if old ~= owner then unindex_token(base, id, old, sub(owner, 1, 64), sub(owner, 65)) end
  access[k + 1], access[k + 2] = akey .. sub(owner, 1, 64), id
  pairs_[k + 1], pairs_[k + 2] = id, owner
  byscore[k + 1], byscore[k + 2] = score, id
  byid[k + 1], byid[k + 2] = '0', id
  k = k + 2
  local user = ukey .. sub(owner, 65)
  local list = users[user]
  if not list then list = {}; users[user] = list end
  list[#list + 1] = score
  list[#list + 1] = id
end
each_chunk(access, 2, function(...) redis.call('MSET', ...) end)
each_chunk(pairs_, 2, function(...) redis.call('HSET', to, ...) end)
each_chunk(byscore, 2, function(...) redis.call('ZADD', tx, ...) end)
each_chunk(byid, 2, function(...) redis.call('ZADD', ti, ...) end)
zadd_all(users)
return 1
"""

# Tokens or sessions.  KEYS: the kind's expiry, id and owner indexes (tx, ti, to /
# sx, si, so).  ARGV: base, kind ('t' or 's'), ids...
_DELETE_RECORDS = _LUA_LIB + r"""
local ids = {}
for i = 3, #ARGV do ids[i - 2] = ARGV[i] end
drop(ARGV[1], ARGV[2], KEYS[1], KEYS[2], KEYS[3], ids)
return 1
"""

# KEYS: ta:<digest>.  ARGV: base.  The token's JSON, or nil.
_TOKEN_BY_ACCESS = r"""
local id = redis.call('GET', KEYS[1])
if not id then return false end
return redis.call('GET', ARGV[1] .. 't:' .. id)
"""

# KEYS: tu:<user>.  ARGV: base.  Every indexed token's JSON (nil where the record is gone).
_USER_TOKENS = r"""
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for i, id in ipairs(ids) do out[i] = redis.call('GET', ARGV[1] .. 't:' .. id) end
return out
"""

# KEYS: sx, si, so.  ARGV: base, mode, now, then one per session: "id NUL user NUL
# score NUL px NUL json".  Mode '' stores; 'c' (create_session) stores only if the
# one session is not live, 'r' (replace_session) only if it is; returns 1 if stored.
_STORE_SESSIONS = _LUA_LIB + r"""
local base, sx, si, so = ARGV[1], KEYS[1], KEYS[2], KEYS[3]
local sessions, ids = {}, {}
for i = 4, #ARGV do
  local s = fields(ARGV[i], 5)
  sessions[#sessions + 1] = s
  ids[#ids + 1] = s[1]
end
if ARGV[2] ~= '' then
  local live = session_live(base, sx, ids[1], ARGV[3])
  if live == (ARGV[2] == 'c') then return 0 end
end
for _, s in ipairs(sessions) do  -- the records first (see the token store)
  local name = base .. 's:' .. s[1]
  if s[4] == '' then redis.call('SET', name, s[5]) else redis.call('SET', name, s[5], 'PX', s[4]) end
end
local olds = hmget(so, ids)
local owners, adds = {}, {}
for n, s in ipairs(sessions) do
  local id, user, score = s[1], s[2], s[3]
  unindex_session(base, id, olds[n], user)
  owners[#owners + 1] = id
  owners[#owners + 1] = user
  push(adds, base .. 'su:' .. user, score, id)
  push(adds, sx, score, id)
  push(adds, si, '0', id)
end
each_chunk(owners, 2, function(...) redis.call('HSET', so, ...) end)
zadd_all(adds)
return 1
"""

# KEYS: s:<id>, sx, so.  ARGV: base, id, now, score, px, expires, last (JSON numbers
# or 'null') and, for _touch_session_ip only, the ip address (a JSON string or
# 'null').  Rewrites only those fields inside the stored record: the record is
# [1,"user",created,expires,last,ip,...] (compact JSON), and the user id and the
# ip address are JSON strings (or null), skipped honouring their escapes.
_TOUCH_SESSION = _LUA_LIB + r"""
local base, id = ARGV[1], ARGV[2]
if not session_live(base, KEYS[2], id, ARGV[3]) then return 0 end
local record = redis.call('GET', KEYS[1])
local find, sub = string.find, string.sub
local function string_end(from)  -- the position after the JSON string opening at from
  local i = from + 1
  while true do
    local c = find(record, '["\\]', i)
    if sub(record, c, c) == '\\' then i = c + 2 else return c + 1 end
  end
end
local i = string_end(find(record, '"', 1, true))
local a = find(record, ',', i + 1, true)  -- after created
local b = find(record, ',', a + 1, true)  -- after expires
local c = find(record, ',', b + 1, true)  -- after last_activity
local touched
if ARGV[8] == nil then
  touched = sub(record, 1, a) .. ARGV[6] .. ',' .. ARGV[7] .. sub(record, c)
else
  local d = sub(record, c + 1, c + 1) == 'n' and c + 5 or string_end(c + 1)  -- after the ip
  touched = sub(record, 1, a) .. ARGV[6] .. ',' .. ARGV[7] .. ',' .. ARGV[8] .. sub(record, d)
end
if ARGV[5] == '' then redis.call('SET', KEYS[1], touched) else redis.call('SET', KEYS[1], touched, 'PX', ARGV[5]) end
local user = redis.call('HGET', KEYS[3], id)
redis.call('ZADD', KEYS[2], ARGV[4], id)
if user then redis.call('ZADD', base .. 'su:' .. user, ARGV[4], id) end
return 1
"""

# Tokens or sessions of one user.  KEYS: tu:<user> / su:<user>, then the kind's
# expiry, id and owner indexes.  ARGV: base, kind, keep ('' = none).  The count deleted.
_DELETE_USER = _LUA_LIB + r"""
local doomed = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if id ~= ARGV[3] then doomed[#doomed + 1] = id end
end
drop(ARGV[1], ARGV[2], KEYS[2], KEYS[3], KEYS[4], doomed)
return #doomed
"""

# KEYS: su:<user>.  ARGV: base, now.  id, JSON, id, JSON, ... of every session
# indexed as live (JSON nil where Redis has already expired the record).
_USER_SESSIONS = r"""
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf')
local out = {}
for i, id in ipairs(ids) do
  out[2 * i - 1] = id
  out[2 * i] = redis.call('GET', ARGV[1] .. 's:' .. id)
end
return out
"""

# KEYS: kv:<key>, kx.  ARGV: header+value, key, score, px.
_STORE_KV = r"""
if ARGV[4] == '' then redis.call('SET', KEYS[1], ARGV[1]) else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4]) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
"""

# KEYS: kx.  ARGV: base, then four per entry: key, header+value, score, px ('' = none).
_STORE_KV_ENTRIES = r"""
local base = ARGV[1]
for i = 2, #ARGV, 4 do
  local name = base .. 'kv:' .. ARGV[i]
  if ARGV[i + 3] == '' then
    redis.call('SET', name, ARGV[i + 1])
  else
    redis.call('SET', name, ARGV[i + 1], 'PX', ARGV[i + 3])
  end
  redis.call('ZADD', KEYS[1], ARGV[i + 2], ARGV[i])
end
return 1
"""

# KEYS: kv:<key>, kx.  ARGV: header+value, key, score, px, now.  Stores only if
# no live entry has the key; 1 if it stored.
_ADD_KV = _LUA_LIB + r"""
local old = redis.call('GET', KEYS[1])
if old and kv_live(old, ARGV[5]) then return 0 end
if ARGV[4] == '' then redis.call('SET', KEYS[1], ARGV[1]) else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4]) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
"""

# KEYS: kv:<key>, kx, a scratch key.  ARGV: key, amount, header, score, px, now.
# The new value as decimal text, or false if the live value is not a counter or
# the sum leaves int64.  Lua numbers are doubles, so the sum is Redis's own exact
# INCRBY on the scratch key (in this storage's slot), deleted before returning.
_INCR_KV = _LUA_LIB + r"""
local old = redis.call('GET', KEYS[1])
if not old or not kv_live(old, ARGV[6]) then
  local value = ARGV[3] .. ARGV[2]
  if ARGV[5] == '' then redis.call('SET', KEYS[1], value) else redis.call('SET', KEYS[1], value, 'PX', ARGV[5]) end
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
  return ARGV[2]
end
redis.call('SET', KEYS[3], string.sub(old, 9))
local done = redis.pcall('INCRBY', KEYS[3], ARGV[2])
local total = false
if type(done) ~= 'table' or not done.err then total = redis.call('GET', KEYS[3]) end
redis.call('DEL', KEYS[3])
if total then redis.call('SET', KEYS[1], string.sub(old, 1, 8) .. total, 'KEEPTTL') end
return total
"""

# KEYS: kv:<key>, kx.  ARGV: key, header, score, px, now.  A new expiry for a live
# entry: its 8-byte header and native TTL change, the value is not copied.
_TOUCH_KV = _LUA_LIB + r"""
local old = redis.call('GET', KEYS[1])
if not old or not kv_live(old, ARGV[5]) then return 0 end
redis.call('SETRANGE', KEYS[1], 0, ARGV[2])
if ARGV[4] == '' then redis.call('PERSIST', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

# KEYS: kv:<key>, kx.  ARGV: key.
_DELETE_KV = r"""
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: tx, ti, to, sx, si, so, kx.  ARGV: base, now, limit.  Deletes up to
# `limit` expired records of each kind (also index entries whose record Redis
# has already expired) and returns the three counts.
_CLEANUP = _LUA_LIB + r"""
local base, now, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local tids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
drop(base, 't', KEYS[1], KEYS[2], KEYS[3], tids)
local sids = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, limit)
drop(base, 's', KEYS[4], KEYS[5], KEYS[6], sids)
local keys = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now, 'LIMIT', 0, limit)
for _, key in ipairs(keys) do redis.call('DEL', base .. 'kv:' .. key) end
each_chunk(keys, 1, function(...) redis.call('ZREM', KEYS[7], ...) end)
return {#tids, #sids, #keys}
"""

# KEYS: tx, sx, kx.  ARGV: now.  Live and expired counts of each index.
_STATS = r"""
local out = {}
for i = 1, 3 do
  out[2 * i - 1] = redis.call('ZCOUNT', KEYS[i], '(' .. ARGV[1], '+inf')
  out[2 * i] = redis.call('ZCOUNT', KEYS[i], '-inf', ARGV[1])
end
return out
"""

# KEYS: the lock.  ARGV: the holder's token.  Deletes the lock only if we still hold it.
_RELEASE_LOCK = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# -- encoding ---------------------------------------------------------------


def _enc(text: str) -> bytes:
    # surrogatepass: ids are any str without NUL, lone surrogates included.
    return text.encode("utf-8", "surrogatepass")


def _dec(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


# The encoding rules are the codec's (one place for every backend).
_micros, _moment, _live = micros, moment, live


def _score(expires_at: datetime | None) -> bytes:
    return b"+inf" if expires_at is None else str(_micros(expires_at)).encode()


def _dumps(value: Any) -> bytes:
    # UTF-8, not ASCII escapes: 8 MiB of "ü" stays 8 MiB instead of 24.  A lone
    # surrogate in a JSON value is escaped (the codec), so Redis holds valid UTF-8.
    return dumps(value).encode("utf-8")


def _digest(access_token: str) -> bytes:
    return digest(access_token).hex().encode()


def _token_record(token: AuthToken) -> bytes:
    return _dumps([
        _FORMAT, token.token_id, token.user_id, token.access_token, token.refresh_token, token.token_type,
        token.scopes, _micros(token.issued_at), None if token.expires_at is None else _micros(token.expires_at),
        token.client_id, token.metadata,
    ])


def _unreadable(kind: str, exc: Exception) -> StorageError:
    # Never the data itself in the message: it may hold tokens.
    return StorageError(f"a stored {kind} is unreadable ({type(exc).__name__}); not written by RedisStorage?")


def _token_from(data: bytes) -> AuthToken:
    try:
        return _parse_token(data)
    except (ValueError, TypeError, OverflowError) as exc:  # also json and UTF-8 errors
        raise _unreadable("token", exc) from exc


def _parse_token(data: bytes) -> AuthToken:
    record = loads(_dec(data))
    (_, token_id, user_id, access, refresh, token_type, scopes, issued, expires, client_id, metadata) = record
    return AuthToken(
        token_id=token_id, user_id=user_id, access_token=access, refresh_token=refresh, token_type=token_type,
        scopes=scopes, issued_at=_moment(issued), expires_at=None if expires is None else _moment(expires),
        client_id=client_id, metadata=metadata,
    )


def _session_record(session: SessionData) -> bytes:
    return _dumps([
        _FORMAT, session.user_id, _micros(session.created_at),
        None if session.expires_at is None else _micros(session.expires_at), _micros(session.last_activity),
        session.ip_address, session.user_agent, session.data,
    ])


def _session_from(session_id: str, data: bytes) -> SessionData:
    try:
        return _parse_session(session_id, data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise _unreadable("session", exc) from exc


def _parse_session(session_id: str, data: bytes) -> SessionData:
    (_, user_id, created, expires, last, ip, agent, payload) = loads(_dec(data))
    return SessionData(
        session_id=session_id, user_id=user_id, created_at=_moment(created),
        expires_at=None if expires is None else _moment(expires), last_activity=_moment(last),
        ip_address=ip, user_agent=agent, data=payload,
    )


def _glob_escape(data: bytes) -> bytes:
    """``data`` as a SCAN MATCH pattern that matches only itself."""
    out = bytearray()
    for byte in data:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)


def _base(prefix: str) -> bytes:
    """The prefix plus a hash tag, so every key of this storage is in one cluster slot.

    A prefix that already holds a hash tag (``"app:{tenant1}:"``) is the
    caller's choice of slot and is used as it is.
    """
    start = prefix.find("{")
    if start != -1:
        end = prefix.find("}", start + 1)
        if end == start + 1:
            raise ValueError("prefix contains an empty hash tag '{}', which Redis Cluster ignores")
        if end != -1:
            return _enc(prefix)
    tag = prefix.replace("{", "").replace("}", "").rstrip(":") or "authkit"
    return _enc(f"{prefix}{{{tag}}}:")


def _ms(seconds: float) -> bytes:
    """A PX argument: whole milliseconds, at least 1 (Redis refuses 0)."""
    return str(max(1, int(seconds * 1000 + 0.999))).encode()


# The marker key: its presence says "an authkit store lives under this prefix in this database".
_MARKER = b"schema"
_MARKER_VALUE = b"authkit redis store, layout 1"


class _Errors:
    """``with storage._errors:`` turns redis-py exceptions into authkit's, cause attached."""

    __slots__ = ("_secrets", "_where")

    def __init__(self, where: str, secrets: list[str]) -> None:
        self._where = where
        self._secrets = secrets

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, _UNAVAILABLE):
            raise StorageUnavailableError(f"Redis at {self._where} is unavailable: {self._text(exc)}") from exc
        if isinstance(exc, redis_errors.RedisError):
            raise StorageError(f"Redis at {self._where} failed: {self._text(exc)}") from exc

    def _text(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        for secret in self._secrets:  # never echo a password, whatever the driver put in its message
            text = text.replace(secret, "***")
        return text


def _where(client: Any) -> str:
    """Where the client points, for repr and messages: never the password."""
    if isinstance(client, redis.cluster.RedisCluster):
        cluster: Any = client  # get_nodes() has no type hints
        nodes = sorted(f"{n.host}:{n.port}" for n in cluster.get_nodes())
        return "cluster " + ",".join(nodes[:3]) + (",…" if len(nodes) > 3 else "")
    pool = client.connection_pool
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        sentinels = pool.sentinel_manager.sentinels
        where = ",".join(_where(s).rsplit("/", 1)[0] for s in sentinels)
        return f"sentinel {pool.service_name} via {where}/{pool.connection_kwargs.get('db', 0)}"
    kwargs = pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


class RedisStorage(AuthStorage):
    """Storage in Redis (redis-py), or in a Redis Cluster through ``redis.cluster.RedisCluster``.

    ``client`` must not decode responses.  ``prefix`` starts every key name;
    it gets a hash tag appended (``authkit:`` -> ``authkit:{authkit}:``) unless
    it already has one, so all keys of a storage share one cluster slot.
    ``token_retention`` is the safety net for tokens: Redis deletes a token
    that long after it expired even if ``cleanup_expired`` never runs
    (``None``: never).  A client passed in is the caller's to close (unless
    ``owns_client=True``); one built by :meth:`from_url` is closed by :meth:`close`.

    Like the SQL tables, a storage has a marker key (``<prefix>{...}:schema``):
    ``create_schema=True`` (the default) writes it if missing; with
    ``create_schema=False`` a missing marker is a :class:`ConfigurationError`,
    so a mistyped prefix or database number is refused instead of looking
    like an empty store (``authkit init`` writes it).

    >>> storage = RedisStorage(redis.Redis(), prefix="myapp:")
    """

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        prefix: str = "authkit:",
        clock: Clock | None = None,
        token_retention: float | timedelta | None = None,
        owns_client: bool = False,
        create_schema: bool = True,
    ) -> None:
        super().__init__(clock=clock)
        if not isinstance(client, (redis.Redis, redis.cluster.RedisCluster)):
            raise TypeError(f"client must be a redis.Redis or redis.cluster.RedisCluster, not {type(client).__name__}")
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("RedisStorage needs a client with decode_responses=False (values are bytes)")
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str")
        if not prefix or "\x00" in prefix:
            raise ValueError("prefix must be a non-empty str without NUL")
        self._retention = ttl_seconds(token_retention)
        if self._retention is not None and self._retention > _MAX_RETENTION:
            # Redis refuses a PX this large, and would refuse it inside the store script.
            raise ValueError("token_retention must be at most 100 years")
        self._client: Any = client  # redis-py's return types are sync/async unions: checked here, not by mypy
        self._owns_client = owns_client
        self._sentinel: Any = None  # the redis.sentinel.Sentinel from_url built, closed with the client
        self.prefix = prefix
        base = self._b = _base(prefix)
        self._tx, self._ti, self._to, self._sx, self._si, self._so, self._kx = (
            base + k for k in (b"tx", b"ti", b"to", b"sx", b"si", b"so", b"kx")
        )
        self._token_keys = [self._tx, self._ti, self._to]
        self._session_keys = [self._sx, self._si, self._so]
        password = client.get_connection_kwargs().get("password")
        self._where = _where(client)
        self._errors = _Errors(self._where, [password] if isinstance(password, str) and password else [])
        register = client.register_script
        self._store_tokens_lua = register(_STORE_TOKENS)
        self._delete_records_lua = register(_DELETE_RECORDS)
        self._token_by_access_lua = register(_TOKEN_BY_ACCESS)
        self._user_tokens_lua = register(_USER_TOKENS)
        self._store_sessions_lua = register(_STORE_SESSIONS)
        self._user_sessions_lua = register(_USER_SESSIONS)
        self._store_kv_lua = register(_STORE_KV)
        self._store_kv_entries_lua = register(_STORE_KV_ENTRIES)
        self._touch_session_lua = register(_TOUCH_SESSION)
        self._delete_user_lua = register(_DELETE_USER)
        self._add_kv_lua = register(_ADD_KV)
        self._incr_kv_lua = register(_INCR_KV)
        self._touch_kv_lua = register(_TOUCH_KV)
        self._delete_kv_lua = register(_DELETE_KV)
        self._cleanup_lua = register(_CLEANUP)
        self._stats_lua = register(_STATS)
        self._release_lua = register(_RELEASE_LOCK)
        self._check_marker(create_schema)

    def _check_marker(self, create: bool) -> None:
        """Write the marker key (``create``), or refuse a store without one, as SQL refuses missing tables."""
        if not isinstance(create, bool):
            raise TypeError("create_schema must be a bool")
        marker = self._b + _MARKER
        with self._errors:
            if create:
                self._client.set(marker, _MARKER_VALUE, nx=True)
                return
            present = self._client.exists(marker)
        if not present:
            raise ConfigurationError(
                f"no authkit store with prefix {self.prefix!r} at Redis {self._where} "
                "(a wrong database or prefix?); create it with `authkit init` "
                "(flask authkit init, manage.py authkit_init; in code, create_schema=True)"
            )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStorage:
        """A storage on a new client for ``redis://``, ``rediss://`` or ``unix://`` URLs.

        Options: ``prefix``, ``clock``, ``token_retention``, ``cluster=True``
        (a :class:`redis.cluster.RedisCluster` seeded from the URL's node),
        ``create_schema`` (write the marker key, or with ``False`` refuse a
        store without one); anything else goes to redis-py's ``from_url`` (e.g.
        ``socket_timeout``, ``ssl_ca_certs``).  ``redis+sentinel://`` and
        ``rediss+sentinel://`` URLs give a client on the master Redis Sentinel names
        (see :mod:`authkit.storage._redis_sentinel` for the URL form).

        >>> storage = RedisStorage.from_url("redis://:secret@localhost:6379/0", prefix="myapp:")
        """
        if not isinstance(url, str):
            raise TypeError("url must be a str")
        own = {k: options.pop(k) for k in ("prefix", "clock", "token_retention", "create_schema") if k in options}
        cluster = bool(options.pop("cluster", False))
        options.setdefault("socket_connect_timeout", 5.0)
        options.setdefault("socket_timeout", 30.0)
        try:
            urlsplit(url)
        except ValueError as exc:  # e.g. an unbalanced IPv6 bracket
            raise ConfigurationError("malformed Redis URL") from exc
        # Every secret of the URL (user-info and ?password=), masked out of any message.
        errors = _Errors(url.split("://", 1)[0] + "://…", url_secrets(url))
        sentinel: Any = None
        try:
            with errors:
                client: redis.Redis | redis.cluster.RedisCluster
                if url.split("://", 1)[0].lower() in _sentinel.SCHEMES:
                    if cluster:
                        raise ConfigurationError("cluster=True and a redis+sentinel:// URL exclude each other")
                    client, sentinel = _sentinel.sentinel_client(url, options)
                elif cluster:
                    client = redis.cluster.RedisCluster.from_url(url, **options)
                else:
                    client = redis.Redis.from_url(url, **options)
                    # redis-py only builds a connection (and so rejects an unknown
                    # option) at the first command: check the options now.
                    pool = client.connection_pool
                    pool.connection_class(**pool.connection_kwargs)
        except ValueError as exc:
            raise ConfigurationError(f"bad Redis URL or option: {errors._text(exc)}") from exc
        try:
            storage = cls(client, owns_client=True, **own)
        except BaseException:
            client.close()
            raise
        storage._sentinel = sentinel
        return storage

    def __repr__(self) -> str:
        return f"RedisStorage({self._where!r}, prefix={self.prefix!r})"

    def close(self) -> None:
        """Close the client if this storage built it (:meth:`from_url`)."""
        if self._owns_client:
            self._client.close()
            if self._sentinel is not None:  # the connections to the sentinels themselves
                for client in self._sentinel.sentinels:
                    client.close()

    # -- helpers ------------------------------------------------------------

    def _key(self, kind: bytes, name: str) -> bytes:
        return self._b + kind + _enc(name)

    def _token_arg(self, token: AuthToken, now: datetime) -> bytes:
        """One token as the store script reads it: ``id NUL digest user NUL score NUL px NUL json``."""
        if token.expires_at is None or self._retention is None:
            px = b""
        else:  # the safety net: `retention` after expiry, counted from now for tokens already expired
            left = max((token.expires_at - now).total_seconds(), 0.0)
            px = _ms(left + self._retention)
        return b"\0".join((_enc(token.token_id), _digest(token.access_token) + _enc(token.user_id),
                           _score(token.expires_at), px, _token_record(token)))

    @staticmethod
    def _px(expires_at: datetime | None, now: datetime) -> bytes:
        """The native TTL of a record expiring at ``expires_at``, relative to the storage clock.

        Relative (PX, not PEXPIREAT) so Redis counts the TTL on its own clock:
        a client clock that is off by some seconds does not shorten it.
        """
        if expires_at is None:
            return b""
        return _ms((expires_at - now).total_seconds())

    # -- tokens -----------------------------------------------------------

    def _store_tokens(self, tokens: list[AuthToken]) -> None:
        now = self.now()
        args = [self._b, b"0", *(self._token_arg(token, now) for token in tokens)]
        with self._errors:
            self._store_tokens_lua(keys=self._token_keys, args=args)

    def _get_token(self, token_id: str) -> AuthToken | None:
        with self._errors:
            data = self._client.get(self._key(b"t:", token_id))
        return None if data is None else _token_from(data)

    def _get_token_by_access_token(self, access_token: str, now: datetime) -> AuthToken | None:
        with self._errors:
            data = self._token_by_access_lua(keys=[self._b + b"ta:" + _digest(access_token)], args=[self._b])
        if data is None:
            return None
        token = _token_from(data)
        # Never trust the index alone: the record must be this token, and live.
        if token.access_token != access_token or not _live(token.expires_at, now):
            return None
        return token

    def _update_token(self, token: AuthToken) -> None:
        with self._errors:
            found = self._store_tokens_lua(
                keys=self._token_keys, args=[self._b, b"1", self._token_arg(token, self.now())]
            )
        if not found:
            raise NotFoundError(f"no token with id {token.token_id!r}")

    def _delete_tokens(self, token_ids: list[str]) -> None:
        with self._errors:
            self._delete_records_lua(keys=self._token_keys, args=[self._b, b"t", *map(_enc, token_ids)])

    def _list_user_tokens(self, user_id: str) -> list[AuthToken]:
        with self._errors:
            records = self._user_tokens_lua(keys=[self._key(b"tu:", user_id)], args=[self._b])
        tokens = [t for t in (_token_from(r) for r in records if r is not None) if t.user_id == user_id]
        return sorted(tokens, key=lambda t: (t.issued_at, t.token_id))

    # -- sessions ---------------------------------------------------------

    def _store_sessions(self, sessions: list[SessionData]) -> None:
        self._write_sessions(sessions, b"", self.now())

    def _write_sessions(self, sessions: list[SessionData], mode: bytes, now: datetime) -> bool:
        """Store sessions; with ``mode`` ``c``/``r`` one session, only if it is not / is live."""
        args: list[Any] = [self._b, mode, _micros(now)]
        args += (b"\0".join((_enc(s.session_id), _enc(s.user_id), _score(s.expires_at), self._px(s.expires_at, now),
                             _session_record(s))) for s in sessions)
        with self._errors:
            return bool(self._store_sessions_lua(keys=self._session_keys, args=args))

    def _get_session(self, session_id: str, now: datetime) -> SessionData | None:
        with self._errors:
            data = self._client.get(self._key(b"s:", session_id))
        if data is None:
            return None
        session = _session_from(session_id, data)
        return session if _live(session.expires_at, now) else None

    def _delete_sessions(self, session_ids: list[str]) -> None:
        with self._errors:
            self._delete_records_lua(keys=self._session_keys, args=[self._b, b"s", *map(_enc, session_ids)])

    def _list_user_sessions(self, user_id: str, now: datetime) -> list[SessionData]:
        with self._errors:
            found = self._user_sessions_lua(keys=[self._key(b"su:", user_id)], args=[self._b, _micros(now)])
        sessions = []
        for session_id, data in zip(found[::2], found[1::2], strict=True):
            if data is None:
                continue
            session = _session_from(_dec(session_id), data)
            # Never trust the index alone: the record must be this user's, and live.
            if session.user_id == user_id and _live(session.expires_at, now):
                sessions.append(session)
        return sorted(sessions, key=lambda s: (s.created_at, s.session_id))

    def _count_active_sessions(self, now: datetime) -> int:
        with self._errors:
            return int(self._client.zcount(self._sx, f"({_micros(now)}", "+inf"))

    # -- key-value --------------------------------------------------------

    def _store_kv(self, key: str, value: bytes, expires_at: datetime | None) -> None:
        header = _HEADER.pack(_NO_EXPIRY if expires_at is None else _micros(expires_at))
        name = _enc(key)
        with self._errors:
            self._store_kv_lua(keys=[self._b + b"kv:" + name, self._kx],
                               args=[header + value, name, _score(expires_at), self._px(expires_at, self.now())])

    def _store_kv_entries(self, entries: list[tuple[str, bytes, datetime | None]]) -> None:
        if not entries:
            return
        now = self.now()
        args: list[Any] = [self._b]
        for key, value, expires_at in entries:
            header = _HEADER.pack(_NO_EXPIRY if expires_at is None else _micros(expires_at))
            args += [_enc(key), header + value, _score(expires_at), self._px(expires_at, now)]
        with self._errors:
            self._store_kv_entries_lua(keys=[self._kx], args=args)

    def _get_kv_entry(self, key: str, now: datetime) -> tuple[bytes, datetime | None] | None:
        with self._errors:
            data = self._client.get(self._key(b"kv:", key))
        return None if data is None else self._kv_entry(data, now)

    @staticmethod
    def _kv_entry(data: bytes, now: datetime) -> tuple[bytes, datetime | None] | None:
        """A stored kv value (expiry header + value) as ``(value, expires_at)``, ``None`` if expired."""
        try:
            (micros,) = _HEADER.unpack_from(data)
        except struct.error as exc:
            raise _unreadable("kv entry", exc) from exc
        expires_at = None if micros == _NO_EXPIRY else _moment(micros)
        if not _live(expires_at, now):
            return None
        return data[_HEADER.size:], expires_at

    def _delete_kv(self, key: str) -> None:
        name = _enc(key)
        with self._errors:
            self._delete_kv_lua(keys=[self._b + b"kv:" + name, self._kx], args=[name])

    def _list_kv_keys(self, prefix: str, now: datetime) -> list[str]:
        # SCAN, never KEYS: it walks the keyspace in steps without blocking the
        # server.  On a cluster, scan_iter walks every primary (the slot may be
        # mid-migration between two of them).
        start = self._b + b"kv:"
        pattern = _glob_escape(start + _enc(prefix)) + b"*"
        with self._errors:
            names = {name[len(start):] for name in self._client.scan_iter(match=pattern, count=_SCAN_COUNT)}
            members = sorted(names)
            scores: list[float | None] = []
            for i in range(0, len(members), _SCAN_COUNT):
                scores += self._client.zmscore(self._kx, members[i:i + _SCAN_COUNT])
        cutoff = _micros(now)
        # A key SCAN saw is listed only if the expiry index says it is live now.
        return [_dec(m) for m, s in zip(members, scores, strict=True) if s is not None and s > cutoff]

    # -- atomic primitives: one script each --------------------------------

    def _create_session(self, session: SessionData, now: datetime) -> bool:
        return self._write_sessions([session], b"c", now)

    def _replace_session(self, session: SessionData, now: datetime) -> bool:
        return self._write_sessions([session], b"r", now)

    def _touch_session(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, now: datetime
    ) -> bool:
        name = _enc(session_id)
        args: list[Any] = [self._b, name, _micros(now), _score(expires_at), self._px(expires_at, now),
                b"null" if expires_at is None else str(_micros(expires_at)).encode(),
                str(_micros(last_activity)).encode()]
        with self._errors:
            return bool(self._touch_session_lua(keys=[self._b + b"s:" + name, self._sx, self._so], args=args))

    def _touch_session_ip(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, ip_address: str | None,
        now: datetime,
    ) -> bool:
        name = _enc(session_id)
        args: list[Any] = [self._b, name, _micros(now), _score(expires_at), self._px(expires_at, now),
                b"null" if expires_at is None else str(_micros(expires_at)).encode(),
                str(_micros(last_activity)).encode(), _dumps(ip_address)]
        with self._errors:
            return bool(self._touch_session_lua(keys=[self._b + b"s:" + name, self._sx, self._so], args=args))

    def _delete_user(self, kind: bytes, user_id: str, keep: str | None) -> int:
        index = self._key(kind + b"u:", user_id)
        keys = [index, *(self._token_keys if kind == b"t" else self._session_keys)]
        with self._errors:
            return int(self._delete_user_lua(keys=keys, args=[self._b, kind, b"" if keep is None else _enc(keep)]))

    def _delete_user_sessions(self, user_id: str, keep: str | None) -> int:
        return self._delete_user(b"s", user_id, keep)

    def _delete_user_tokens(self, user_id: str) -> int:
        return self._delete_user(b"t", user_id, None)

    def _add_kv(self, key: str, value: bytes, expires_at: datetime | None, now: datetime) -> bool:
        header = _HEADER.pack(_NO_EXPIRY if expires_at is None else _micros(expires_at))
        name = _enc(key)
        with self._errors:
            return bool(self._add_kv_lua(
                keys=[self._b + b"kv:" + name, self._kx],
                args=[header + value, name, _score(expires_at), self._px(expires_at, now), _micros(now)],
            ))

    def _incr_kv(self, key: str, amount: int, expires_at: datetime | None, now: datetime) -> int:
        header = _HEADER.pack(_NO_EXPIRY if expires_at is None else _micros(expires_at))
        name = _enc(key)
        with self._errors:
            total = self._incr_kv_lua(
                keys=[self._b + b"kv:" + name, self._kx, self._b + b"incr"],
                args=[name, amount, header, _score(expires_at), self._px(expires_at, now), _micros(now)],
            )
        if total is None:
            raise counter_overflow(key, amount)
        return int(total)

    def _touch_kv(self, key: str, expires_at: datetime | None, now: datetime) -> bool:
        header = _HEADER.pack(_NO_EXPIRY if expires_at is None else _micros(expires_at))
        name = _enc(key)
        with self._errors:
            return bool(self._touch_kv_lua(
                keys=[self._b + b"kv:" + name, self._kx],
                args=[name, header, _score(expires_at), self._px(expires_at, now), _micros(now)],
            ))

    # -- maintenance ------------------------------------------------------

    def _cleanup_batch(self, now: datetime, limit: int, kinds: Sequence[str] = CLEANUP_KINDS) -> CleanupReport:
        # Every kind in one step (cheap here); `kinds` only spares SQL empty statements.
        with self._errors:
            tokens, sessions, kv = self._cleanup_lua(
                keys=[*self._token_keys, *self._session_keys, self._kx], args=[self._b, _micros(now), limit]
            )
        return CleanupReport(tokens=int(tokens), sessions=int(sessions), kv=int(kv))

    def _stats(self, now: datetime) -> dict[str, int]:
        with self._errors:
            counts = self._stats_lua(keys=[self._tx, self._sx, self._kx], args=[_micros(now)])
        names = ["tokens_live", "tokens_expired", "sessions_live", "sessions_expired", "kv_live", "kv_expired"]
        return {name: int(count) for name, count in zip(names, counts, strict=True)}

    def _id_page(self, index: bytes, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        # The id index is ordered by id (all scores 0): the cursor is the last
        # id returned, so ids stored or deleted meanwhile never shift a page.
        low = b"-" if cursor is None else b"(" + _enc(cursor)
        with self._errors:
            members = self._client.zrangebylex(index, low, b"+", start=0, num=limit)
        ids = [_dec(m) for m in members]
        return ids, (ids[-1] if len(ids) == limit else None)

    # Pages of whole records (encrypt_existing, reencrypt): the id page, then one MGET.

    def _mget(self, kind: bytes, names: list[str]) -> list[bytes | None]:
        if not names:
            return []
        with self._errors:
            return list(self._client.mget([self._key(kind, n) for n in names]))

    def _token_page(self, cursor: str | None, limit: int) -> tuple[list[AuthToken], str | None]:
        ids, cursor = self._token_id_page(cursor, limit)
        return [_token_from(data) for data in self._mget(b"t:", ids) if data is not None], cursor

    def _session_page(self, cursor: str | None, limit: int, now: datetime) -> tuple[list[SessionData], str | None]:
        ids, cursor = self._session_id_page(cursor, limit)
        records = zip(ids, self._mget(b"s:", ids), strict=True)
        found = (_session_from(i, data) for i, data in records if data is not None)
        return [s for s in found if _live(s.expires_at, now)], cursor

    def _get_kv_entries(self, keys: list[str], now: datetime) -> list[tuple[bytes, datetime | None] | None]:
        return [None if data is None else self._kv_entry(data, now) for data in self._mget(b"kv:", keys)]

    def _token_id_page(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        return self._id_page(self._ti, cursor, limit)

    def _session_id_page(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        return self._id_page(self._si, cursor, limit)

    def _try_lock(self, name: str, ttl: float) -> bytes | None:
        holder = uuid.uuid4().hex.encode()
        with self._errors:
            taken = self._client.set(self._key(b"lock:", name), holder, nx=True, px=int(_ms(ttl)))
        return holder if taken else None

    def _release_lock(self, name: str, handle: Any) -> None:
        with self._errors:
            # Compare-and-delete: a holder whose ttl ran out must not free
            # the lock someone else holds now.
            self._release_lua(keys=[self._key(b"lock:", name)], args=[handle])
