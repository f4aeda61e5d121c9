-- Takes back a queued send that the decision script recorded for a push this instance could
-- not queue after all (its local queue was full, `limits.maxQueuedPushes`): the token's entry
-- goes back to the send before it, one window earlier, so that every instance queues the
-- token's next push as usual instead of refusing it as already queued while nothing is.
--
-- Only the exact send recorded then is taken back: an entry holding any other time was written
-- by a later decision (another push queued once that time had come, or a send after the entry
-- was lost), which must stand. An entry still holding it means no send was decided since, even
-- if its time has come: the send before it then limits nothing any more.
--
-- KEYS[1]  the token's ratelimit entry
-- ARGV[1]  the window in microseconds
-- ARGV[2]  the queued send's time, as the decision script answered it
--
-- Returns 1 when the queued send was taken back, 0 when the entry no longer held it.

if redis.replicate_commands then
  redis.replicate_commands()
end

local entry = redis.pcall('GET', KEYS[1])
local queued = tonumber(ARGV[2])
if type(entry) ~= 'string' or not queued or tonumber(entry) ~= queued then
  return 0
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local window = tonumber(ARGV[1])
-- Written before Redis's clock stepped back: the decision script treats it as over already.
if queued > now + window then
  return 0
end
if queued <= now then
  redis.call('DEL', KEYS[1])
  return 1
end

-- The send before it limits its token until the queued time, then the entry expires.
local ttl_ms = math.ceil((queued - now) / 1000)
if ttl_ms < 1 then
  ttl_ms = 1
end
redis.call('SET', KEYS[1], string.format('%.0f', queued - window), 'PX', string.format('%.0f', ttl_ms))
return 1
