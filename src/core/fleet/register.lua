-- register.lua: a process joins the fleet (at connect).
--
-- KEYS[1]  {p}:nodes      HASH node key -> "maxconn weight"
-- KEYS[2]  {p}:processes  ZSET process id -> heartbeat expiry (server ms)
-- KEYS[3]  {p}:verdicts   HASH; its field "adaptive" -> "on" or "off": whether
--          the fleet's processes run adaptive limits (the first to join sets it)
-- ARGV[1]  lease TTL (ms): the heartbeat's life; the fleet keys live twice that
-- ARGV[2]  this process's id
-- ARGV[3]  "on" or "off": whether this process runs adaptive limits
-- ARGV[4 + 2(i-1)], ARGV[5 + 2(i-1)]  node i's key and "maxconn weight"
-- Returns a flat array: the fleet's "adaptive" value, then node key and
-- registered "maxconn weight" for each node whose registered value differs
-- from ours (the first registered holds). A process whose "adaptive" differs
-- from the fleet's is not registered: the caller refuses to join.

local ttl = tonumber(ARGV[1])
local now = now_ms()
redis.call('HSETNX', KEYS[3], 'adaptive', ARGV[3])
keep_alive(KEYS[3], 2 * ttl)
local mode = redis.call('HGET', KEYS[3], 'adaptive')
local answer = {mode}
if mode ~= ARGV[3] then
  return answer
end
for a = 4, #ARGV, 2 do
  local node, spec = ARGV[a], ARGV[a + 1]
  if redis.call('HSETNX', KEYS[1], node, spec) == 0 then
    local registered = redis.call('HGET', KEYS[1], node)
    if registered ~= spec then
      answer[#answer + 1] = node
      answer[#answer + 1] = registered
    end
  end
end
keep_alive(KEYS[1], 2 * ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
keep_alive(KEYS[2], 2 * ttl)
return answer
