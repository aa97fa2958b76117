-- Claim a new generation atomically, if the one seen is still there (or none is): the
-- region turns not ready and every structure validators and receipts read is dropped first,
-- so an interrupted rebuild never looks ready (workers.cache; fields: shared.keys).
--
-- KEYS[1] meta hash, KEYS[2] partitions hash, KEYS[3] epochs hash.
-- ARGV[1] seen generation ('' = none), ARGV[2] new generation, ARGV[3] cluster id,
-- ARGV[4] topic, ARGV[5] partition count, ARGV[6] topic id ('' = unknown).
-- Returns 1 if claimed, 0 if the generation changed meanwhile.

local current = redis.call('HGET', KEYS[1], 'generation') or ''
if current ~= ARGV[1] then
  return 0
end
local info = redis.pcall('INFO', 'replication')
if type(info) ~= 'string' then  -- refused (ACL): a cache bound to no server would hide a failover
  return redis.error_reply('INFO refused: the worker cannot record the replication id')
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'generation', ARGV[2], 'building', '0', 'ready', '0',
  'applied', '0', 'cluster', ARGV[3], 'topic', ARGV[4], 'partitions', ARGV[5])
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'topic_id', ARGV[6])
end
-- built from offset 0 on this server: bound to its replication id (apply.lua checks it)
local replid = string.match(info, 'master_replid:(%w+)')
if replid then
  redis.call('HSET', KEYS[1], 'replid', replid)
end
return 1
