-- Apply one batch of token-stream records to a region's cache, atomically.
--
-- KEYS[1] meta hash, KEYS[2] partitions hash, KEYS[3] epochs hash, KEYS[4] dead letters zset.
-- ARGV[1] generation the worker believes in, ARGV[2] now (ms), ARGV[3] invalidation channel,
-- ARGV[4] token key prefix ('<ns>:tok:'), ARGV[5] expiry margin (ms), ARGV[6] tombstone TTL
-- (ms), ARGV[7] JSON array of verified token and epoch events exactly as published,
-- ARGV[8] JSON array of [partition, next_offset, newest_heartbeat (0 = none),
-- start offset (-1 = not stated)], ARGV[9] the topic's partition count as the worker's
-- consumer knows it (0 = unknown), ARGV[10] JSON array of dead letters [member, score].
--
-- Tokens keep the highest version (compare-and-set on seq); a token's key (and so its
-- version) outlives the token's expiry by the tombstone TTL, and the tombstone of a revoked
-- token without expiry is kept for good, so an older record replayed later is refused (a
-- replayed record of an expiring token carries its past expiry); epochs
-- only move forward; offsets and heartbeats only move forward. Publishes on the invalidation
-- channel what changed ({g, h = token keys, e = epoch moved}), also when nothing did:
-- near-caches take it as a sign of life.
-- Returns {applied, stale, ready}; {-1} when the cache is not of our generation or one of its
-- structures is missing (lost, flushed, evicted, or rebuilt by another worker): the caller
-- must start over; {-2, partition, next_offset} when the batch starts past what the cache
-- recorded for a partition (the cache went back in time): nothing was applied, and the caller
-- must rewind to the cache's offsets; {-3, replid} when this server's replication id is not
-- the one meta records (a promoted replica, a restarted primary: it may have gone back in
-- time): nothing was applied, and the caller must reopen the cache (workers/reopen.lua).

local meta, parts, epochs, dlq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local PRESENT = '~present'
if redis.call('HGET', meta, 'generation') ~= ARGV[1]
    or redis.call('HEXISTS', parts, PRESENT) == 0
    or redis.call('HEXISTS', epochs, PRESENT) == 0 then
  return {-1}
end
local info = redis.pcall('INFO', 'replication')
if type(info) ~= 'string' then  -- refused (ACL): applying unchecked could hide a failover
  return redis.error_reply('INFO refused: the worker cannot check the replication id')
end
local replid = string.match(info, 'master_replid:(%w+)')
if replid and redis.call('HGET', meta, 'replid') ~= replid then
  return {-3, replid}
end
local offsets = cjson.decode(ARGV[8])
for _, entry in ipairs(offsets) do
  local start = entry[4]
  if start and start >= 0 then
    local o = tonumber(redis.call('HGET', parts, 'o:' .. entry[1]) or '0')
    if start > o then
      return {-2, entry[1], o}
    end
  end
end

local now = tonumber(ARGV[2])
local channel, prefix = ARGV[3], ARGV[4]
local margin, tombstone_ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
local events = cjson.decode(ARGV[7])
local applied, stale = 0, 0
local changed, epoch_moved = {}, 0
local nullv = cjson.null

for _, e in ipairs(events) do
  if e.type == 'token' then
    local key = prefix .. e.hash
    local current = redis.call('HGET', key, 'v')
    if current and tonumber(current) >= e.seq then
      stale = stale + 1
    else
      local expires = e.expires_at
      local op = e.op
      local live = op == 'issued' or op == 'updated'
      -- when the key may vanish: never for a token without expiry, live or revoked (its
      -- old signed issued record stays valid forever, so its tombstone must refuse it
      -- forever); otherwise the tombstone TTL after the later of its expiry and now, once
      -- a replayed record of it carries a past expiry
      local keep_until = 0
      local ea = ''
      if expires ~= nullv and expires ~= nil then
        ea = expires
        keep_until = expires + margin
        if keep_until < now then
          keep_until = now
        end
        keep_until = keep_until + tombstone_ttl
      end
      redis.call('DEL', key)
      if live then
        local id = e.id == nullv and '' or e.id
        redis.call('HSET', key, 'v', e.seq, 's', 'l', 'id', id, 'tt', e.tokenable_type,
          'ti', e.tokenable_id, 'n', e.name, 'ab', cjson.encode(e.abilities),
          'ca', e.created_at, 'ia', e.issued_at, 'ea', ea)
      else
        redis.call('HSET', key, 'v', e.seq, 's', 'r', 'ea', ea)
      end
      if keep_until > 0 then
        redis.call('PEXPIREAT', key, keep_until)
      end
      changed[#changed + 1] = key
      applied = applied + 1
    end
  elseif e.type == 'epoch' then
    local current = tonumber(redis.call('HGET', epochs, e.scope) or '0')
    if e.before > current then
      redis.call('HSET', epochs, e.scope, e.before)
      epoch_moved = 1
      applied = applied + 1
    else
      stale = stale + 1
    end
  else
    return redis.error_reply('unknown event type ' .. tostring(e.type))
  end
end

for _, entry in ipairs(offsets) do
  local p, next_offset, beat = entry[1], entry[2], entry[3]
  local o = tonumber(redis.call('HGET', parts, 'o:' .. p) or '0')
  if next_offset > o then
    redis.call('HSET', parts, 'o:' .. p, next_offset)
  end
  if beat > 0 then
    local h = tonumber(redis.call('HGET', parts, 'h:' .. p) or '0')
    if beat > h then
      redis.call('HSET', parts, 'h:' .. p, beat)
    end
  end
end

for _, letter in ipairs(cjson.decode(ARGV[10])) do
  redis.call('ZADD', dlq, letter[2], letter[1])
end

-- Partitions added to the topic join freshness and the ready gate (their target is 0: they
-- were empty when created, and what was written since is read from their offset 0).
local count = tonumber(redis.call('HGET', meta, 'partitions') or '0')
local known = tonumber(ARGV[9])
if known > count then
  for p = count, known - 1 do
    redis.call('HSETNX', parts, 't:' .. p, 0)
  end
  count = known
  redis.call('HSET', meta, 'partitions', count)
end

-- The oldest partition heartbeat, kept in meta so that validators read one field; none
-- while a partition has none (a validator then answers unavailable).
if count > 0 then
  local fields = {}
  for p = 0, count - 1 do
    fields[p + 1] = 'h:' .. p
  end
  local oldest = nil
  for _, beat in ipairs(redis.call('HMGET', parts, unpack(fields))) do
    if not beat then
      oldest = nil
      break
    end
    local value = tonumber(beat)
    if oldest == nil or value < oldest then
      oldest = value
    end
  end
  if oldest then
    redis.call('HSET', meta, 'hb_min', oldest)
  else
    redis.call('HDEL', meta, 'hb_min')
  end
end

redis.call('HINCRBY', meta, 'applied', applied)
local ready = redis.call('HGET', meta, 'ready') == '1'
if not ready then
  local loaded, total = 0, 0
  ready = count > 0
  for p = 0, count - 1 do
    local target = tonumber(redis.call('HGET', parts, 't:' .. p) or '-1')
    local o = tonumber(redis.call('HGET', parts, 'o:' .. p) or '0')
    if target < 0 then
      ready = false
    else
      total = total + target
      loaded = loaded + math.min(o, target)
      if o < target then
        ready = false
      end
    end
  end
  redis.call('HSET', meta, 'boot_loaded', loaded, 'boot_total', total)
  if ready then
    redis.call('HSET', meta, 'ready', '1', 'ready_at', now)
  end
end

if #changed > 256 then
  changed = {}
  epoch_moved = 1  -- too many to list: listeners drop everything
end
local message = {g = ARGV[1], e = epoch_moved}
if #changed > 0 then
  message.h = changed
end
redis.call('PUBLISH', channel, cjson.encode(message))
return {applied, stale, ready and 1 or 0}
