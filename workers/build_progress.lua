-- Count a rebuild's progress in meta's building field, while the generation is still ours
-- (workers.cache; fields: shared.keys).
--
-- KEYS[1] meta hash; ARGV[1] generation, ARGV[2] keys purged so far.

if redis.call('HGET', KEYS[1], 'generation') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'building', ARGV[2])
end
