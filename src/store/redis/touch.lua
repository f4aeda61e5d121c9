-- Records a push's use of a registration, at most once per ARGV[3] seconds.
-- KEYS: 1 the registration hash, 2 the domain's last-use set.
-- ARGV: 1 node, 2 now, 3 interval, 4 account key stem.
local fields = redis.call('HMGET', KEYS[1], 'u', 'a')
if not fields[1] or tonumber(fields[1]) > tonumber(ARGV[2]) - tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], 'u', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', ARGV[4] .. fields[2], ARGV[2], ARGV[1])
return 1
