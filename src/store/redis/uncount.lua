-- One registration of a service fewer in the counts. A count that would go below zero (the
-- counts key was lost or written by hand) is dropped instead: a negative count would hide as
-- many later registrations from the metrics and the caps. A service at zero keeps no field, nor
-- does one that holds no count (another writer's value, which HINCRBY refuses: every removal
-- of the service, sweeps included, would fail on it).
-- KEYS: 1 the counts hash. ARGV: 1 the service.
local left = redis.pcall('HINCRBY', KEYS[1], ARGV[1], -1)
if type(left) ~= 'number' or left <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
return left
