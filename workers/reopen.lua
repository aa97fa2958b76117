-- Reopen a cache whose server changed (a promoted replica, a restarted primary: it may hold
-- less than the worker applied): not ready until every partition caught up with the topic's
-- end offsets of now, and bound to this server's replication id (workers.cache; fields:
-- shared.keys). Near-caches drop everything (e = 1).
--
-- KEYS[1] meta hash, KEYS[2] partitions hash.
-- ARGV[1] generation, ARGV[2] replication id, ARGV[3] invalidation channel, then
-- partition/target pairs.
-- Returns 1, or 0 if the generation changed meanwhile.

if redis.call('HGET', KEYS[1], 'generation') ~= ARGV[1] then
  return 0
end
for i = 4, #ARGV, 2 do
  local field = 't:' .. ARGV[i]
  local target = tonumber(ARGV[i + 1])
  if target > tonumber(redis.call('HGET', KEYS[2], field) or '0') then
    redis.call('HSET', KEYS[2], field, target)
  end
end
redis.call('HSET', KEYS[1], 'ready', '0', 'replid', ARGV[2])
redis.call('PUBLISH', ARGV[3], cjson.encode({g = ARGV[1], e = 1}))
return 1
