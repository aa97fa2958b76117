-- Apply one batch of token-stream records to a region's cache, atomically.
--
-- KEYS[1] meta hash, KEYS[2] partitions hash, KEYS[3] epochs hash, KEYS[4..] one key per
-- token record.
-- ARGV[1] generation the worker believes in, ARGV[2] now (ms), ARGV[3] invalidation channel,
-- ARGV[4] record count,
-- then per record:
--   'T', version, op ('i','u','r'), id, tokenable_type, tokenable_id, name,
--        abilities_json, created_at, issued_at, expires_at ('' = never), key_expire_at (0 = keep)
--   'E', scope, before
-- then a partition count and per partition: partition, next_offset, heartbeat_at (0 = none).
--
-- Tokens keep the highest version (compare-and-set); a revoked token stays as a tombstone
-- until its key expires; epochs only move forward; offsets and heartbeats only move forward.
-- Publishes on the invalidation channel what changed ({g, h = token keys, e = epoch moved}),
-- also when nothing did: near-caches take the message as a sign of life.
-- Returns {applied, stale, ready} or {-1} when the cache is not of our generation (lost,
-- flushed, or rebuilt by another worker): the caller must reload and rewind.

local meta, parts, epochs = KEYS[1], KEYS[2], KEYS[3]
if redis.call('HGET', meta, 'generation') ~= ARGV[1] then
  return {-1}
end
local now = tonumber(ARGV[2])
local channel = ARGV[3]
local n = tonumber(ARGV[4])
local i, k = 5, 4
local applied, stale = 0, 0
local changed, epoch_moved = {}, 0

for _ = 1, n do
  local kind = ARGV[i]
  if kind == 'T' then
    local key = KEYS[k]
    k = k + 1
    local version = tonumber(ARGV[i + 1])
    local current = redis.call('HGET', key, 'v')
    if current and tonumber(current) >= version then
      stale = stale + 1
    else
      local op = ARGV[i + 2]
      local expire_at = tonumber(ARGV[i + 11])
      redis.call('DEL', key)
      if expire_at > 0 and expire_at <= now then
        -- already expired: nothing to keep (a replay of an old record)
      else
        if op == 'r' then
          redis.call('HSET', key, 'v', version, 's', 'r', 'ea', ARGV[i + 10])
        else
          redis.call('HSET', key, 'v', version, 's', 'l', 'id', ARGV[i + 3], 'tt', ARGV[i + 4],
            'ti', ARGV[i + 5], 'n', ARGV[i + 6], 'ab', ARGV[i + 7], 'ca', ARGV[i + 8],
            'ia', ARGV[i + 9], 'ea', ARGV[i + 10])
        end
        if expire_at > 0 then
          redis.call('PEXPIREAT', key, expire_at)
        end
      end
      changed[#changed + 1] = key
      applied = applied + 1
    end
    i = i + 12
  elseif kind == 'E' then
    local scope = ARGV[i + 1]
    local before = tonumber(ARGV[i + 2])
    local current = tonumber(redis.call('HGET', epochs, scope) or '0')
    if before > current then
      redis.call('HSET', epochs, scope, before)
      epoch_moved = 1
      applied = applied + 1
    else
      stale = stale + 1
    end
    i = i + 3
  else
    return redis.error_reply('unknown record kind ' .. tostring(kind))
  end
end

local np = tonumber(ARGV[i])
i = i + 1
for _ = 1, np do
  local p = ARGV[i]
  local next_offset = tonumber(ARGV[i + 1])
  local beat = tonumber(ARGV[i + 2])
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
  i = i + 3
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
