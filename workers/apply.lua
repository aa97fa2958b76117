-- Apply one batch of token-stream records to a region's cache, atomically.
--
-- KEYS[1] meta hash, KEYS[2] partitions hash, KEYS[3] epochs hash.
-- ARGV[1] generation the worker believes in, ARGV[2] now (ms), ARGV[3] invalidation channel,
-- ARGV[4] token key prefix ('<ns>:tok:'), ARGV[5] expiry margin (ms), ARGV[6] tombstone TTL
-- (ms), ARGV[7] JSON array of verified token and epoch events exactly as published,
-- ARGV[8] JSON array of [partition, next_offset, newest_heartbeat (0 = none)].
--
-- Tokens keep the highest version (compare-and-set on seq); a revoked token stays as a
-- tombstone until its key expires; epochs only move forward; offsets and heartbeats only
-- move forward. Publishes on the invalidation channel what changed ({g, h = token keys,
-- e = epoch moved}), also when nothing did: near-caches take it as a sign of life.
-- Returns {applied, stale, ready} or {-1} when the cache is not of our generation (lost,
-- flushed, or rebuilt by another worker): the caller must reload and rewind.

local meta, parts, epochs = KEYS[1], KEYS[2], KEYS[3]
if redis.call('HGET', meta, 'generation') ~= ARGV[1] then
  return {-1}
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
      local expire_at = 0
      if expires ~= nullv then
        expire_at = expires + margin
      elseif e.op == 'revoked' then
        expire_at = now + tombstone_ttl
      end
      local ea = expires == nullv and '' or expires
      redis.call('DEL', key)
      if expire_at == 0 or expire_at > now then
        if e.op == 'revoked' then
          redis.call('HSET', key, 'v', e.seq, 's', 'r', 'ea', ea)
        else
          local id = e.id == nullv and '' or e.id
          redis.call('HSET', key, 'v', e.seq, 's', 'l', 'id', id, 'tt', e.tokenable_type,
            'ti', e.tokenable_id, 'n', e.name, 'ab', cjson.encode(e.abilities),
            'ca', e.created_at, 'ia', e.issued_at, 'ea', ea)
        end
        if expire_at > 0 then
          redis.call('PEXPIREAT', key, expire_at)
        end
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

for _, entry in ipairs(cjson.decode(ARGV[8])) do
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

-- The oldest partition heartbeat, kept in meta so that validators read one field.
local count = tonumber(redis.call('HGET', meta, 'partitions') or '0')
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
