-- release.lua: gives leases back, a batch in one call, and announces it.
--
-- KEYS[i]  {p}:leases:<node key>  ZSET lease id -> expiry (server ms)
-- ARGV[1]  the fleet's channel, {p}:events
-- then, for each KEYS[i] in order: the count k of its leases, then k lease ids
-- Returns how many leases were removed; when any was, publishes one
-- "release <count>" on the channel (waiting processes try again).

local removed = 0
local a = 2
for i = 1, #KEYS do
  local k = tonumber(ARGV[a])
  for j = a + 1, a + k do
    removed = removed + redis.call('ZREM', KEYS[i], ARGV[j])
  end
  a = a + k + 1
end
if removed > 0 then
  redis.call('PUBLISH', ARGV[1], 'release ' .. removed)
end
return removed
