-- Forgets a registration's second token if it still is the one said dead.
-- KEYS: 1 the registration hash. ARGV: 1 the dead second token.
if redis.call('HGET', KEYS[1], 'v') == ARGV[1] then
  return redis.call('HDEL', KEYS[1], 'v')
end
return 0
