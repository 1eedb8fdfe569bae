"""The Lua scripts of :class:`~authkit.storage.redis.RedisStorage`: every write that
touches more than one key is one script, so a record and its indexes change together.

Scripts touch keys they derive from the base (old index entries whose names
they read from the owner hash).  That is safe on a cluster because every key
of a storage shares one hash tag: they are all in the slot of ``KEYS[1]``.
Bulk work is batched (HMGET, MSET, ZADD of up to 1000 members per call),
because per-record ``redis.call()``\\ s are what a 10,000-token bulk store costs.

A script carries only the helper functions it uses (:func:`_lua`): Redis runs
a script's whole text on every call, so each unused ``local function`` is a
closure built for nothing.  The single-session writes that Flask and Django
sessions make on every request (:data:`WRITE_SESSION`, :data:`TOUCH_SESSION`,
:data:`DELETE_SESSION`) are scripts of their own, with no loops or tables and
no index write that would change nothing, because they are the hot path.
"""

from __future__ import annotations

__all__ = [
    "ADD_KV", "CLEANUP", "DELETE_KV", "DELETE_RECORDS", "DELETE_SESSION", "DELETE_USER", "INCR_KV",
    "RELEASE_LOCK", "STATS", "STORE_KV", "STORE_KV_ENTRIES", "STORE_SESSIONS", "STORE_TOKENS",
    "TOKEN_BY_ACCESS", "TOUCH_KV", "TOUCH_SESSION", "USER_SESSIONS", "USER_TOKENS", "WRITE_SESSION",
]

# name -> (the helpers it calls, its Lua source)
_HELPERS: dict[str, tuple[tuple[str, ...], str]] = {
    "each_chunk": ((), r"""
local CHUNK = 1000
local function each_chunk(items, width, fn)
  local step = CHUNK * width
  for i = 1, #items, step do fn(unpack(items, i, math.min(i + step - 1, #items))) end
end
"""),
    "hmget": (("each_chunk",), r"""
local function hmget(hash, ids)
  local out = {}
  for i = 1, #ids, CHUNK do
    local got = redis.call('HMGET', hash, unpack(ids, i, math.min(i + CHUNK - 1, #ids)))
    for j = 1, #got do out[i + j - 1] = got[j] end
  end
  return out
end
"""),
    # The NUL-separated fields of `s`: n of them, the last one taking the rest
    # (a JSON record: ids hold no NUL, and JSON escapes it).
    "fields": ((), r"""
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
"""),
    # Forget the previous version of token `id` (owner = "<64 hex digest><user>")
    # where it differs from the new digest/user ('' = forget everything).
    "unindex_token": ((), r"""
local function unindex_token(base, id, old, digest, user)
  if not old then return end
  local od, ou = string.sub(old, 1, 64), string.sub(old, 65)
  if od ~= digest then
    local ak = base .. 'ta:' .. od
    if redis.call('GET', ak) == id then redis.call('DEL', ak) end
  end
  if ou ~= user then redis.call('ZREM', base .. 'tu:' .. ou, id) end
end
"""),
    "unindex_session": ((), r"""
local function unindex_session(base, id, old, user)
  if old and old ~= user then redis.call('ZREM', base .. 'su:' .. old, id) end
end
"""),
    # Delete the records `ids` of one kind ('t' or 's') and every index entry of them.
    "drop": (("each_chunk", "hmget", "unindex_token", "unindex_session"), r"""
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
"""),
    # Index new versions: `adds` maps an index key to its flat {score, member, ...} list.
    "zadd_all": (("each_chunk",), r"""
local function zadd_all(adds)
  for key, members in pairs(adds) do
    each_chunk(members, 2, function(...) redis.call('ZADD', key, ...) end)
  end
end
"""),
    # Is the kv value (8-byte big-endian expiry header, all ones = never) live at `now`?
    # Expiries below 2^53 microseconds (year 2255) are exact as Lua numbers; later
    # ones only round, and stay later than any `now`.
    "kv_live": ((), r"""
local function kv_live(value, now)
  local header = string.sub(value, 1, 8)
  if header == '\255\255\255\255\255\255\255\255' then return true end
  local expires = 0
  for k = 1, 8 do expires = expires * 256 + string.byte(header, k) end
  return expires > tonumber(now)
end
"""),
    "push": ((), r"""
local function push(t, key, score, member)
  local list = t[key]
  if not list then list = {}; t[key] = list end
  list[#list + 1] = score
  list[#list + 1] = member
end
"""),
}


def _lua(needs: tuple[str, ...], body: str) -> str:
    """``body`` after the helpers it ``needs`` and theirs, each once, callees first."""
    order: list[str] = []

    def add(name: str) -> None:
        for callee in _HELPERS[name][0]:
            add(callee)
        if name not in order:
            order.append(name)

    for name in needs:
        add(name)
    return "".join(_HELPERS[name][1] for name in order) + body


# KEYS: tx, ti, to.  ARGV: base, must_exist ('1' = update: the token must be stored),
# then one per token: "id NUL digest user NUL score NUL px NUL json" (px '' =
# no TTL).  One argument per token, not six: for a 10,000-token bulk store,
# packing and parsing 60,000 arguments cost more than the writes.
STORE_TOKENS = _lua(("hmget", "each_chunk", "unindex_token", "zadd_all"), r"""
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
""")

# Tokens or sessions.  KEYS: the kind's expiry, id and owner indexes (tx, ti, to /
# sx, si, so).  ARGV: base, kind ('t' or 's'), ids...
DELETE_RECORDS = _lua(("drop",), r"""
local ids = {}
for i = 3, #ARGV do ids[i - 2] = ARGV[i] end
drop(ARGV[1], ARGV[2], KEYS[1], KEYS[2], KEYS[3], ids)
return 1
""")

# KEYS: ta:<digest>.  ARGV: base.  The token's JSON, or nil.
TOKEN_BY_ACCESS = r"""
local id = redis.call('GET', KEYS[1])
if not id then return false end
return redis.call('GET', ARGV[1] .. 't:' .. id)
"""

# KEYS: tu:<user>.  ARGV: base.  Every indexed token's JSON (nil where the record is gone).
USER_TOKENS = r"""
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for i, id in ipairs(ids) do out[i] = redis.call('GET', ARGV[1] .. 't:' .. id) end
return out
"""

# KEYS: sx, si, so.  ARGV: base, then one per session: "id NUL user NUL score NUL
# px NUL json".  Stores them all (store_session(s)); one session goes through
# WRITE_SESSION instead.
STORE_SESSIONS = _lua(("fields", "hmget", "unindex_session", "push", "zadd_all"), r"""
local base, sx, si, so = ARGV[1], KEYS[1], KEYS[2], KEYS[3]
local sessions, ids = {}, {}
for i = 2, #ARGV do
  local s = fields(ARGV[i], 5)
  sessions[#sessions + 1] = s
  ids[#ids + 1] = s[1]
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
  push(adds, base .. 'su:' .. user, '0', id)
  push(adds, sx, score, id)
  push(adds, si, '0', id)
end
each_chunk(owners, 2, function(...) redis.call('HSET', so, ...) end)
zadd_all(adds)
return 1
""")

# One session.  KEYS: s:<id>, su:<user>.  ARGV: base, id, user, score, px ('' = no
# TTL), json, mode, now.  Mode '' stores; 'c' (create_session) stores only if no
# live session has the id, 'r' (replace_session) only if one does; 1 if it stored.
# Live: the record exists (Redis may have expired it) and its expiry is later than
# now; the record's expiry and its score in the expiry index are written together,
# so either tells.  A create tests the first half with SET NX as it writes (a new
# id, the usual case, needs nothing more); a replace reads the old record, which
# also names its user: a replace by the same user (every request's save) writes
# the record and its expiry score, nothing else.  Otherwise the owner hash says
# whether the id is indexed and under which user.
WRITE_SESSION = r"""
local record, base, id, user, mode = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[7]
local sx, so = base .. 'sx', base .. 'so'
local set = {'SET', record, ARGV[6]}
if ARGV[5] ~= '' then set[4] = 'PX'; set[5] = ARGV[5] end
local n = #set
local indexed = true  -- unknown in mode '': ask the owner hash
if mode == 'c' then
  -- A create almost always has a new id: SET NX stores it, no liveness to check,
  -- and HSETNX both indexes the owner and says whether the id was indexed before.
  set[n + 1] = 'NX'
  if redis.call(unpack(set)) then
    if redis.call('HSETNX', so, id, user) == 1 then
      redis.call('ZADD', base .. 'si', 0, id)
      redis.call('ZADD', KEYS[2], 0, id)
      redis.call('ZADD', sx, ARGV[4], id)
      return 1
    end
  else  -- a record is there: taken only if it is not live
    local score = redis.call('ZSCORE', sx, id)
    if score ~= false and (score == 'inf' or tonumber(score) > tonumber(ARGV[8])) then return 0 end
    set[n + 1] = nil
    redis.call(unpack(set))
    indexed = score ~= false  -- sx and so gain and lose an id together
  end
elseif mode == 'r' then
  -- The stored record says it all: its expiry (its score in sx) and its user id,
  -- the JSON string that opens at position 4 of [1,"user",created,expires,...].
  local old = redis.call('GET', record)
  if not old then return 0 end
  local find, sub = string.find, string.sub
  local u = 5
  while true do
    local c = find(old, '["\\]', u)
    if sub(old, c, c) == '\\' then u = c + 2 else u = c + 1; break end
  end
  local a = find(old, ',', u + 1, true)
  local b = find(old, ',', a + 1, true)
  local expires = sub(old, a + 1, b - 1)
  if expires ~= 'null' and tonumber(expires) <= tonumber(ARGV[8]) then return 0 end
  redis.call(unpack(set))
  if sub(old, 1, u) == sub(ARGV[6], 1, u) then  -- the same user (the same JSON string): only the expiry moves
    redis.call('ZADD', sx, ARGV[4], id)
    return 1
  end
else
  redis.call(unpack(set))
end
local old = indexed and redis.call('HGET', so, id)
if old ~= user then
  if old then redis.call('ZREM', base .. 'su:' .. old, id) else redis.call('ZADD', base .. 'si', 0, id) end
  redis.call('HSET', so, id, user)
  redis.call('ZADD', KEYS[2], 0, id)
end
redis.call('ZADD', sx, ARGV[4], id)
return 1
"""

# One session.  KEYS: s:<id>.  ARGV: base, id, now, score, px, expires, last (JSON
# numbers or 'null') and, for _touch_session_ip only, the ip address (a JSON string
# or 'null').  Rewrites only those fields inside the stored record: the record is
# [1,"user",created,expires,last,ip,...] (compact JSON), and the user id and the ip
# address are JSON strings (or null), skipped honouring their escapes.  Live as for
# WRITE_SESSION, decided by the record's own expiry.
TOUCH_SESSION = r"""
local id, sx = ARGV[2], ARGV[1] .. 'sx'
local record = redis.call('GET', KEYS[1])
if not record then return 0 end
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
local expires = sub(record, a + 1, b - 1)  -- the record's expiry is its score in sx: no ZSCORE
if expires ~= 'null' and tonumber(expires) <= tonumber(ARGV[3]) then return 0 end
local c = find(record, ',', b + 1, true)  -- after last_activity
local touched
if ARGV[8] == nil then
  touched = sub(record, 1, a) .. ARGV[6] .. ',' .. ARGV[7] .. sub(record, c)
else
  local d = sub(record, c + 1, c + 1) == 'n' and c + 5 or string_end(c + 1)  -- after the ip
  touched = sub(record, 1, a) .. ARGV[6] .. ',' .. ARGV[7] .. ',' .. ARGV[8] .. sub(record, d)
end
if ARGV[5] == '' then redis.call('SET', KEYS[1], touched) else redis.call('SET', KEYS[1], touched, 'PX', ARGV[5]) end
redis.call('ZADD', sx, ARGV[4], id)
return 1
"""

# One session.  KEYS: s:<id>.  ARGV: base, id.  Its record and every index entry.
DELETE_SESSION = r"""
local base, id = ARGV[1], ARGV[2]
local so = base .. 'so'
local user = redis.call('HGET', so, id)
redis.call('DEL', KEYS[1])
if user then
  redis.call('ZREM', base .. 'su:' .. user, id)
  redis.call('HDEL', so, id)
end
redis.call('ZREM', base .. 'sx', id)
redis.call('ZREM', base .. 'si', id)
return 1
"""

# Tokens or sessions of one user.  KEYS: tu:<user> / su:<user>, then the kind's
# expiry, id and owner indexes.  ARGV: base, kind, keep ('' = none).  The count deleted.
DELETE_USER = _lua(("drop",), r"""
local doomed = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if id ~= ARGV[3] then doomed[#doomed + 1] = id end
end
drop(ARGV[1], ARGV[2], KEYS[2], KEYS[3], KEYS[4], doomed)
return #doomed
""")

# KEYS: su:<user>.  ARGV: base.  id, JSON, id, JSON, ... of every session of the
# user (JSON nil where Redis has already expired the record); the caller keeps the
# live ones.  The per-user index holds members only (score 0), so the saves that
# slide a session's expiry on every request need not rewrite it.
USER_SESSIONS = r"""
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for i, id in ipairs(ids) do
  out[2 * i - 1] = id
  out[2 * i] = redis.call('GET', ARGV[1] .. 's:' .. id)
end
return out
"""

# KEYS: kv:<key>, kx.  ARGV: header+value, key, score, px.
STORE_KV = r"""
if ARGV[4] == '' then redis.call('SET', KEYS[1], ARGV[1]) else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4]) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
"""

# KEYS: kx.  ARGV: base, then four per entry: key, header+value, score, px ('' = none).
STORE_KV_ENTRIES = r"""
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
ADD_KV = _lua(("kv_live",), r"""
local old = redis.call('GET', KEYS[1])
if old and kv_live(old, ARGV[5]) then return 0 end
if ARGV[4] == '' then redis.call('SET', KEYS[1], ARGV[1]) else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4]) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
""")

# KEYS: kv:<key>, kx, a scratch key.  ARGV: key, amount, header, score, px, now.
# The new value as decimal text, or false if the live value is not a counter or
# the sum leaves int64.  Lua numbers are doubles, so the sum is Redis's own exact
# INCRBY on the scratch key (in this storage's slot), deleted before returning.
INCR_KV = _lua(("kv_live",), r"""
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
""")

# KEYS: kv:<key>, kx.  ARGV: key, header, score, px, now.  A new expiry for a live
# entry: its 8-byte header and native TTL change, the value is not copied.
TOUCH_KV = _lua(("kv_live",), r"""
local old = redis.call('GET', KEYS[1])
if not old or not kv_live(old, ARGV[5]) then return 0 end
redis.call('SETRANGE', KEYS[1], 0, ARGV[2])
if ARGV[4] == '' then redis.call('PERSIST', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
""")

# KEYS: kv:<key>, kx.  ARGV: key.
DELETE_KV = r"""
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: tx, ti, to, sx, si, so, kx.  ARGV: base, now, limit.  Deletes up to
# `limit` expired records of each kind (also index entries whose record Redis
# has already expired) and returns the three counts.
CLEANUP = _lua(("drop",), r"""
local base, now, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local tids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
drop(base, 't', KEYS[1], KEYS[2], KEYS[3], tids)
local sids = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, limit)
drop(base, 's', KEYS[4], KEYS[5], KEYS[6], sids)
local keys = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now, 'LIMIT', 0, limit)
for _, key in ipairs(keys) do redis.call('DEL', base .. 'kv:' .. key) end
each_chunk(keys, 1, function(...) redis.call('ZREM', KEYS[7], ...) end)
return {#tids, #sids, #keys}
""")

# KEYS: tx, sx, kx.  ARGV: now.  Live and expired counts of each index.
STATS = r"""
local out = {}
for i = 1, 3 do
  out[2 * i - 1] = redis.call('ZCOUNT', KEYS[i], '(' .. ARGV[1], '+inf')
  out[2 * i] = redis.call('ZCOUNT', KEYS[i], '-inf', ARGV[1])
end
return out
"""

# KEYS: the lock.  ARGV: the holder's token.  Deletes the lock only if we still hold it.
RELEASE_LOCK = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
