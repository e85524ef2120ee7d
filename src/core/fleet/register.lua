-- register.lua: a process joins the fleet (at connect).
--
-- KEYS[1]  {p}:nodes      HASH node key -> "maxconn weight"
-- KEYS[2]  {p}:processes  ZSET process id -> heartbeat expiry (server ms)
-- ARGV[1]  lease TTL (ms): the heartbeat's life; the fleet keys live twice that
-- ARGV[2]  this process's id
-- ARGV[3 + 2(i-1)], ARGV[4 + 2(i-1)]  node i's key and "maxconn weight"
-- Returns a flat array: node key, registered "maxconn weight", for each node
-- whose registered value differs from ours (the first registered holds).

local ttl = tonumber(ARGV[1])
local now = now_ms()
local disagreements = {}
for a = 3, #ARGV, 2 do
  local node, spec = ARGV[a], ARGV[a + 1]
  if redis.call('HSETNX', KEYS[1], node, spec) == 0 then
    local registered = redis.call('HGET', KEYS[1], node)
    if registered ~= spec then
      disagreements[#disagreements + 1] = node
      disagreements[#disagreements + 1] = registered
    end
  end
end
keep_alive(KEYS[1], 2 * ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
keep_alive(KEYS[2], 2 * ttl)
return disagreements
