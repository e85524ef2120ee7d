-- prelude.lua: helpers every fleet script starts with (the Rust side puts
-- this text before each script, so the scripts share one copy of them).
--
-- KEYS, ARGV: none of its own. Returns: nothing; defines three functions.

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

-- The render count of a node's adaptive limit, "<limit> <best>" (best a
-- positive finite number, or "-"), read exactly as the Rust side reads it
-- (FleetLimit::parse): nil for anything else, so that a value one side
-- cannot read caps nothing on either.
local function fleet_limit(value)
  if not value then
    return nil
  end
  local limit, best = string.match(value, '^(%d+) (%S+)$')
  limit = tonumber(limit)
  if not limit or limit < 1 then
    return nil
  end
  if best ~= '-' then
    best = tonumber(best)
    if not best or best ~= best or best <= 0 or best == math.huge then
      return nil
    end
  end
  return limit
end
