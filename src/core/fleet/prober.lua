-- prober.lua: the fleet's prober lock; one process probes the nodes.
--
-- KEYS[1]  {p}:prober  STRING: the holder's process id, expiring (PX)
-- ARGV[1]  this process's id
-- ARGV[2]  the lock's TTL (ms)
-- Returns 1 when this process holds the lock now (taken free, or renewed),
-- 0 when another process holds it.

local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
