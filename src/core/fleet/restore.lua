-- restore.lua: re-registers leases this process holds (after Redis lost
-- them): renders in flight are real, so they count even if that puts a node
-- above its maxconn for their remaining time.
--
-- KEYS[i]  {p}:leases:<node key>  ZSET lease id -> expiry (server ms)
-- ARGV[1]  lease TTL (ms)
-- then, for each KEYS[i] in order: the count k of its leases, then k lease ids
-- Returns how many leases were added (ZADD NX: a lease present keeps its expiry).

local ttl = tonumber(ARGV[1])
local expiry = now_ms() + ttl
local added = 0
local a = 2
for i = 1, #KEYS do
  local k = tonumber(ARGV[a])
  for j = a + 1, a + k do
    added = added + redis.call('ZADD', KEYS[i], 'NX', expiry, ARGV[j])
  end
  if k > 0 then
    keep_alive(KEYS[i], ttl)
  end
  a = a + k + 1
end
return added
