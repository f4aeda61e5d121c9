-- One registration of a service more in the counts. A field that holds no count (another
-- writer's value) starts over at one: HINCRBY refuses it, and with it every new registration
-- of the service.
-- KEYS: 1 the counts hash. ARGV: 1 the service.
local counted = redis.pcall('HINCRBY', KEYS[1], ARGV[1], 1)
if type(counted) ~= 'number' then
  redis.call('HSET', KEYS[1], ARGV[1], 1)
  return 1
end
return counted
