-- verdict.lua: sets a node's verdict (or one of its drains) for the whole
-- fleet and announces it.
--
-- KEYS[1]  {p}:verdicts  HASH node key -> "DOWN <reason>" (absent: UP),
--          "drain:<cause>:<node key>" -> the drain's detail (absent: none)
-- ARGV[1]  the fleet's channel, {p}:events
-- ARGV[2]  the field: the node's key, or "drain:<cause>:<node key>"
-- ARGV[3]  "DOWN <reason>" (or the drain's detail), or "" to clear
-- ARGV[4]  lease TTL (ms): the hash lives twice that past its last write
-- ARGV[5]  optional "NX": set only when the field is absent (a first value,
--          as the fleet's adaptive limit of 1 at start)
-- Returns 1 when the verdict changed (then "verdict <node key>" is
-- published), 0 when it already was so.

local before = redis.call('HGET', KEYS[1], ARGV[2])
local changed
if ARGV[5] == 'NX' and before then
  return 0
elseif ARGV[3] == '' then
  changed = redis.call('HDEL', KEYS[1], ARGV[2]) == 1
else
  changed = before ~= ARGV[3]
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  keep_alive(KEYS[1], 2 * tonumber(ARGV[4]))
end
if changed then
  redis.call('PUBLISH', ARGV[1], 'verdict ' .. ARGV[2])
  return 1
end
return 0
