-- One push's ratelimit decision for fpush's shared (Redis) backend. Redis runs one script at a
-- time, so reading the token's last send and writing the new one cannot interleave with another
-- fpush instance deciding for the same token.
--
-- Times are Redis's own clock (TIME), in microseconds: every instance measures against the same
-- clock, so clock skew between fpush hosts cannot open or stretch a window.
--
-- KEYS[1]  the token's ratelimit entry: the time of its last send, or of its queued send
-- KEYS[2]  the token's dead-token entry (exists while a provider's "dead" verdict is remembered)
-- ARGV[1]  the window in microseconds, or "off" when the module's ratelimit is disabled
-- ARGV[2]  "1" to consult KEYS[2]
--
-- Returns {outcome, delay, at}: outcome 0 = send now, 1 = send after delay microseconds (queued),
-- 2 = reject (a push is already queued), 3 = the token is known dead; at = the send time
-- recorded (0 when none), which a take-back of a queued send names (see unqueue.lua).

-- Only a string is a provider's verdict (fpush writes '1'): a key of another type under that
-- name (a damaged key, or another client's) must not answer the token dead, which makes the
-- XMPP server delete its registration.
if ARGV[2] == '1' and type(redis.pcall('GET', KEYS[2])) == 'string' then
  return {3, 0, 0}
end
if ARGV[1] == 'off' then
  return {0, 0, 0}
end

-- Redis 3.2 to 4 need this before a write that follows TIME; later versions always replicate
-- a script's effects and keep the call only as a no-op.
if redis.replicate_commands then
  redis.replicate_commands()
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local window = tonumber(ARGV[1])
-- An entry that is not a string (a damaged key, or another client's under our name) is no send:
-- the SET below replaces it. Failing the script instead would take Redis down for every push.
local entry = redis.pcall('GET', KEYS[1])
local last = nil
if type(entry) == 'string' then
  last = tonumber(entry)
end

local send_at = now
local outcome = 0
-- A queued send lies at most one window ahead; anything later was written before Redis's clock
-- stepped back (a failover to a host with another clock) and is treated as over.
if last and last <= now + window then
  if last > now then
    return {2, 0, 0}
  end
  if now - last < window then
    send_at = last + window
    outcome = 1
  end
end

-- The entry limits its token until one window after the send it records; then it expires.
local ttl_ms = math.ceil((send_at - now + window) / 1000)
if ttl_ms < 1 then
  ttl_ms = 1
end
redis.call('SET', KEYS[1], string.format('%.0f', send_at), 'PX', string.format('%.0f', ttl_ms))
return {outcome, send_at - now, send_at}
