-- Takes back a queued send that the decision script recorded for a push this instance could
-- not queue after all (its local queue was full, `limits.maxQueuedPushes`): the token's entry
-- goes back to the send before it, one window earlier, so that every instance queues the
-- token's next push as usual instead of refusing it as already queued while nothing is.
--
-- While an entry lies in the future (a queued send), the decision script only refuses and
-- never writes, and nothing deletes ratelimit entries: a queued entry found here is the one
-- this instance was given. Once its time has come it is a send like any other and is left.
--
-- KEYS[1]  the token's ratelimit entry
-- ARGV[1]  the window in microseconds
--
-- Returns 1 when the queued send was taken back, 0 when there was none.

if redis.replicate_commands then
  redis.replicate_commands()
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local window = tonumber(ARGV[1])
local entry = redis.pcall('GET', KEYS[1])
if type(entry) ~= 'string' then
  return 0
end
local queued = tonumber(entry)
-- Not queued, or written before Redis's clock stepped back (the decision script treats such
-- an entry as over).
if not queued or queued <= now or queued > now + window then
  return 0
end

-- The send before it limits its token until the queued time, then the entry expires.
local ttl_ms = math.ceil((queued - now) / 1000)
if ttl_ms < 1 then
  ttl_ms = 1
end
redis.call('SET', KEYS[1], string.format('%.0f', queued - window), 'PX', string.format('%.0f', ttl_ms))
return 1
