-- take.lua: one lease on the best candidate node with a free slot, atomically.
--
-- KEYS[1]      {p}:nodes     HASH node key -> "maxconn weight"
-- KEYS[2]      {p}:verdicts  HASH node key -> "DOWN <reason>" (absent: UP);
--              "drain:operator:<node key>", "drain:maxrss:<node key>": drained;
--              "limit:<node key>" -> "<limit> <best>": the fleet's adaptive
--              limit, under maxconn (absent: maxconn)
-- KEYS[2 + i]  {p}:leases:<candidate i's node key>
--              ZSET lease id -> expiry (server ms)
-- ARGV[1]      lease TTL (ms)
-- ARGV[2]      the new lease's id
-- ARGV[3]      start: the candidate position (0-based) where ties begin
-- ARGV[4 + 3(i-1)]  candidate i's node key
-- ARGV[5 + 3(i-1)]  candidate i's rank: 0 untried and preferred, 1 untried,
--                   2 tried and preferred, 3 tried (lower wins)
-- ARGV[6 + 3(i-1)]  candidate i's "maxconn weight" as this process has it,
--                   registered when the node is not (Redis lost or expired
--                   the hash): the registered value is the one that counts
-- Returns the chosen candidate's position (1-based), or 0 when none is UP
-- and below its maxconn (or its adaptive limit) counting every process's unexpired leases (an
-- expired lease never counts; the chosen node's expired ones are purged).
--
-- Among the eligible: the lowest rank, then the least (in_flight + 1) / weight
-- (compared without division), ties to the first from `start` round.

local ttl = tonumber(ARGV[1])
local n = #KEYS - 2
if n < 1 then
  return 0
end
local now = now_ms()
local start = tonumber(ARGV[3]) % n
-- One HMGET each for the specs, the verdicts, the two drains and the limits,
-- one ZCOUNT per candidate (unexpired leases; only the chosen node's set is
-- purged): 5 + n calls,
-- about 2.4 us of server time per candidate (measured on loopback: 13 us at
-- 3 nodes, 115 at 50, 480 at 200; fleet_tests.rs take_latency).
local node_keys = {}
for i = 1, n do
  node_keys[i] = ARGV[4 + 3 * (i - 1)]
end
local specs = redis.call('HMGET', KEYS[1], unpack(node_keys))
local verdicts = redis.call('HMGET', KEYS[2], unpack(node_keys))
-- A drained node starts no render, whichever process asks (two more
-- HMGETs: the drain causes live beside the verdicts).
local by_operator, over_maxrss = {}, {}
for i = 1, n do
  by_operator[i] = 'drain:operator:' .. node_keys[i]
  over_maxrss[i] = 'drain:maxrss:' .. node_keys[i]
end
by_operator = redis.call('HMGET', KEYS[2], unpack(by_operator))
over_maxrss = redis.call('HMGET', KEYS[2], unpack(over_maxrss))
-- The adaptive limits (one more HMGET): every process's renders count
-- against the fleet's one limit per node.
local limits = {}
for i = 1, n do
  limits[i] = 'limit:' .. node_keys[i]
end
limits = redis.call('HMGET', KEYS[2], unpack(limits))
local best, best_rank, best_in_flight, best_weight = 0, 0, 0, 1
for offset = 0, n - 1 do
  local i = (start + offset) % n + 1
  local a = 4 + 3 * (i - 1)
  if not verdicts[i] and not by_operator[i] and not over_maxrss[i] then
    local spec = specs[i]
    if not spec then
      spec = ARGV[a + 2]
      redis.call('HSET', KEYS[1], node_keys[i], spec)
      keep_alive(KEYS[1], 2 * ttl)
    end
    local maxconn, weight = string.match(spec, '^(%d+) (%d+)$')
    maxconn, weight = tonumber(maxconn), tonumber(weight)
    local limit = fleet_limit(limits[i])
    if maxconn and limit and limit < maxconn then
      maxconn = limit
    end
    local in_flight = redis.call('ZCOUNT', KEYS[2 + i], '(' .. now, '+inf')
    if maxconn and weight and in_flight < maxconn then
      local rank = tonumber(ARGV[a + 1])
      if best == 0 or rank < best_rank or (rank == best_rank
          and (in_flight + 1) * best_weight < (best_in_flight + 1) * weight) then
        best, best_rank, best_in_flight, best_weight = i, rank, in_flight, weight
      end
    end
  end
end
if best > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2 + best], '-inf', now)
  redis.call('ZADD', KEYS[2 + best], now + ttl, ARGV[2])
  keep_alive(KEYS[2 + best], ttl)
end
return best
