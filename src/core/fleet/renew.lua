-- renew.lua: the periodic call of each process, one per renewal period.
-- Renews its leases, refreshes its heartbeat, and returns the fleet.
--
-- KEYS[1]      {p}:nodes      HASH node key -> "maxconn weight"
-- KEYS[2]      {p}:verdicts   HASH node key -> "DOWN <reason>"; and the drains,
--              "drain:operator:<node key>" -> "1", "drain:maxrss:<node key>"
--              -> "<peak> <limit>" (bytes); "limit:<node key>" -> "<limit> <best>"
--              (the fleet's adaptive limit, set by the prober process)
-- KEYS[3]      {p}:processes  ZSET process id -> heartbeat expiry (server ms)
-- KEYS[3 + i]  {p}:leases:<node i's key>, for every node of this process
-- ARGV[1]      lease TTL (ms)
-- ARGV[2]      this process's id
-- then, for each node i in order: its key, its "maxconn weight" (registered
-- if the node is not), the count k of this process's leases on it, k lease ids
-- Returns {in_flight, verdicts, processes, by_operator, over_maxrss, limits}:
-- per node the unexpired leases of every process and the verdict ("DOWN
-- <reason>", or nil when UP), the live process ids, and per node its drains
-- and its adaptive limit (nil when none).
--
-- Expired leases are purged before the renewal (ZADD XX), so a lease that
-- expired or was released is never revived.

local ttl = tonumber(ARGV[1])
local now = now_ms()
local in_flight, verdicts, by_operator, over_maxrss, limits = {}, {}, {}, {}, {}
local a = 3
for i = 1, #KEYS - 3 do
  local node, spec, k = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local leases = KEYS[3 + i]
  redis.call('HSETNX', KEYS[1], node, spec)
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  if k > 0 then
    local args = {'ZADD', leases, 'XX'}
    for j = a + 3, a + 2 + k do
      args[#args + 1] = now + ttl
      args[#args + 1] = ARGV[j]
    end
    redis.call(unpack(args))
    keep_alive(leases, ttl)
  end
  in_flight[i] = redis.call('ZCARD', leases)
  verdicts[i] = redis.call('HGET', KEYS[2], node)
  by_operator[i] = redis.call('HGET', KEYS[2], 'drain:operator:' .. node)
  over_maxrss[i] = redis.call('HGET', KEYS[2], 'drain:maxrss:' .. node)
  limits[i] = redis.call('HGET', KEYS[2], 'limit:' .. node)
  a = a + 3 + k
end
keep_alive(KEYS[1], 2 * ttl)
keep_alive(KEYS[2], 2 * ttl)
redis.call('ZADD', KEYS[3], now + ttl, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
keep_alive(KEYS[3], 2 * ttl)
return {in_flight, verdicts, redis.call('ZRANGE', KEYS[3], 0, -1), by_operator, over_maxrss, limits}
