-- prelude.lua: helpers every fleet script starts with (the Rust side puts
-- this text before each script, so the scripts share one copy of them).
--
-- KEYS, ARGV: none of its own. Returns: nothing; defines two functions.

-- Milliseconds since the epoch by the Redis server's clock: every expiry in
-- the fleet is on this one clock, never on a crawler's.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Lets `key` live at least `ms` more milliseconds, never shortening a longer
-- life another process gave it (PEXPIRE GT without needing Redis 7): a fleet
-- abandoned by every process leaves no key behind for ever.
local function keep_alive(key, ms)
  local left = redis.call('PTTL', key)
  if left ~= -2 and left < ms then
    redis.call('PEXPIRE', key, ms)
  end
end
