-- Validate one token in one round trip: the token, every epoch that applies to it, and the
-- region's readiness and freshness.
--
-- KEYS[1] token hash key, KEYS[2] meta hash, KEYS[3] epochs hash, KEYS[4] partitions hash.
-- ARGV[1] (optional) the replication id the validator verified for this connection (its
-- INFO replication, asked on connect and then at most every few ms: shared.server_check);
-- '' = that INFO was refused. Without ARGV[1] the script asks INFO itself (every call).
-- Returns {ready (-1 = the epochs or the partitions hash lost its presence marker: evicted
--          or deleted, so "no epoch" cannot be told from "epochs forgotten"; unavailable,
--          as shared.region_state says not ready; -2 = this server's replication id is not
--          the one its worker recorded: a promoted replica or a restarted primary that may
--          have gone back in time, until the worker re-applied the gap; -3 = this server
--          refused INFO, so its replication id cannot be checked), oldest heartbeat
--          (-1 = not every partition has one), newest applicable epoch, state, id,
--          tokenable_type, tokenable_id, name, abilities, created_at, issued_at,
--          expires_at}; missing token fields are nil.

local meta = redis.call('HMGET', KEYS[2], 'ready', 'hb_min', 'replid')
local ready = meta[1] == '1' and 1 or 0
if ready == 1 and redis.call('HEXISTS', KEYS[4], '~present') == 0 then
  ready = -1
end
local replid = meta[3]
if ready == 1 and replid then
  local seen = ARGV[1]
  if seen == nil then
    local info = redis.pcall('INFO', 'replication')
    if type(info) ~= 'string' then
      ready = -3  -- INFO refused (an ACL without it, a renamed command): fail closed
    else
      seen = string.match(info, 'master_replid:(%w+)')
    end
  elseif seen == '' then
    ready = -3  -- the validator's INFO was refused: fail closed
  end
  if ready == 1 and seen ~= replid then
    ready = -2
  end
end
local tok = redis.call('HMGET', KEYS[1], 's', 'id', 'tt', 'ti', 'n', 'ab', 'ca', 'ia', 'ea')
-- the epochs hash's presence marker is read with the token's epochs (one call)
local scopes = {'~present'}
if tok[1] == 'l' then
  scopes[2] = 'global'
  scopes[3] = 'principal:' .. tok[3] .. ':' .. tok[4]
  -- A UUID id: its epochs are written for the lower-case spelling (events.principal_scope).
  local hex = '%x%x%x%x'
  if tok[4] and string.match(tok[4], '^' .. hex .. hex .. '%-' .. hex .. '%-' .. hex .. '%-'
                             .. hex .. '%-' .. hex .. hex .. hex .. '$') then
    local lower = string.lower(tok[4])
    if lower ~= tok[4] then
      scopes[#scopes + 1] = 'principal:' .. tok[3] .. ':' .. lower
    end
  end
  local ok, abilities = pcall(cjson.decode, tok[6])
  if ok and type(abilities) == 'table' then
    for _, ability in ipairs(abilities) do
      if type(ability) == 'string' then
        scopes[#scopes + 1] = 'ability:' .. ability
      end
    end
  end
end
local values = redis.call('HMGET', KEYS[3], unpack(scopes))
if not values[1] and ready == 1 then
  ready = -1
end
local epoch = 0
for i = 2, #scopes do
  local value = values[i]
  if value then
    value = tonumber(value)
    if value > epoch then
      epoch = value
    end
  end
end
return {ready, tonumber(meta[2] or '-1'), epoch, tok[1], tok[2], tok[3],
        tok[4], tok[5], tok[6], tok[7], tok[8], tok[9]}
