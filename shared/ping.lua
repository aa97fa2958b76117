-- Publish a ping: Redis's time with the region's freshness fields, in the same atomic
-- step, so that everything published before it precedes it on the channel
-- (shared.nearcache; fields: shared.keys.PingField).
--
-- KEYS[1] meta hash, KEYS[2] epochs hash, KEYS[3] partitions hash; ARGV[1] channel,
-- ARGV[2] kind (ping | sync), ARGV[3] near-cache id, ARGV[4] ping number. Returns the
-- Redis time (ms).
-- Ready as validate.lua judges it: a region whose epochs or partitions hash lost its
-- presence marker (evicted or deleted) is not ready, whatever its meta says.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local m = redis.call('HMGET', KEYS[1], 'hb_min', 'ready', 'generation')
local ready = m[2] == '1' and redis.call('HEXISTS', KEYS[2], '~present') == 1
  and redis.call('HEXISTS', KEYS[3], '~present') == 1
local replid = redis.call('HGET', KEYS[1], 'replid')  -- as validate.lua: a server that
if ready and replid then                                -- changed is not ready
  local info = redis.pcall('INFO', 'replication')
  ready = type(info) == 'string' and string.match(info, 'master_replid:(%w+)') == replid
end
redis.call('PUBLISH', ARGV[1], cjson.encode({k = ARGV[2], id = ARGV[3], n = tonumber(ARGV[4]),
  t = now, hb = tonumber(m[1] or '-1') or -1, r = ready and 1 or 0, g = m[3] or ''}))
return now
