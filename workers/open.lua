-- Finish a claimed generation once the namespace's old keys are gone: bootstrap targets,
-- and the presence markers every later apply and validation checks (workers.cache;
-- fields: shared.keys).
--
-- KEYS[1] meta hash, KEYS[2] partitions hash, KEYS[3] epochs hash.
-- ARGV[1] generation, then partition/target pairs.
-- Returns 1, or 0 if the generation changed meanwhile.

if redis.call('HGET', KEYS[1], 'generation') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], '~present', '1')
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[2], 't:' .. ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[3], '~present', '1')
redis.call('HDEL', KEYS[1], 'building')
return 1
