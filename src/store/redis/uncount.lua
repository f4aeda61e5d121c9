-- One registration of a service fewer in the counts. A count that would go below zero (the
-- counts key was lost or written by hand) is dropped instead: a negative count would hide as
-- many later registrations from the metrics and the caps. A service at zero keeps no field.
-- KEYS: 1 the counts hash. ARGV: 1 the service.
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if left <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return left
