-- Validate one token in one round trip: the token, every epoch that applies to it, and the
-- region's readiness and freshness.
--
-- KEYS[1] token hash key, KEYS[2] meta hash, KEYS[3] partitions hash.
-- ARGV[1] key namespace (epoch keys depend on the token's owner and abilities, so they are
-- named here; tokensync's cache is one Redis per region, not a cluster).
-- Returns {ready, partitions, oldest_heartbeat (-1 = a partition has none), newest epoch,
--          state, version, id, tokenable_type, tokenable_id, name, abilities, created_at,
--          issued_at, expires_at}; missing token fields are nil.

local meta = redis.call('HMGET', KEYS[2], 'ready', 'partitions')
local ready = meta[1] == '1' and 1 or 0
local count = tonumber(meta[2] or '0')
local oldest = -1
if count > 0 then
  local fields = {}
  for p = 0, count - 1 do
    fields[p + 1] = 'h:' .. p
  end
  local beats = redis.call('HMGET', KEYS[3], unpack(fields))
  for _, beat in ipairs(beats) do
    if not beat then
      oldest = -1
      break
    end
    local value = tonumber(beat)
    if oldest == -1 or value < oldest then
      oldest = value
    end
  end
end

local tok = redis.call('HMGET', KEYS[1], 's', 'v', 'id', 'tt', 'ti', 'n', 'ab', 'ca', 'ia', 'ea')
local epoch = 0
if tok[1] == 'l' then
  local ns = ARGV[1]
  local function bump(key)
    local value = redis.call('GET', key)
    if value then
      value = tonumber(value)
      if value > epoch then
        epoch = value
      end
    end
  end
  bump(ns .. ':epoch:global')
  bump(ns .. ':epoch:principal:' .. tok[4] .. ':' .. tok[5])
  local ok, abilities = pcall(cjson.decode, tok[7])
  if ok and type(abilities) == 'table' then
    for _, ability in ipairs(abilities) do
      if type(ability) == 'string' then
        bump(ns .. ':epoch:ability:' .. ability)
      end
    end
  end
end
return {ready, count, oldest, epoch, tok[1], tok[2], tok[3], tok[4], tok[5], tok[6], tok[7],
        tok[8], tok[9], tok[10]}
