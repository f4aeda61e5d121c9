-- A known registration's new token and account, in its domain's slot; node and secret stay.
-- KEYS: 1 the registration hash, 2 the domain's last-use set, 3 the new account's set.
-- ARGV: 1 node, 2 service, 3 device, 4 channel, 5 account, 6 token, 7 second token ('' = none),
--       8 last use, 9 account key stem.
-- Answers the secret, or false when the registration is gone (or is another key's).
local fields = redis.call('HMGET', KEYS[1], 's', 'd', 'c', 'a', 'x', 'u')
-- Gone, or without its secret (another writer damaged it: no repair gives it back): nothing is
-- written, and the caller replaces it.
if redis.call('EXISTS', KEYS[1]) == 0 or not fields[5] then
  return false
end
-- The key index points here for this key. A hash another writer damaged, its service, device
-- or channel missing and the rest agreeing, is this key's registration and is repaired: left
-- as it is, a new node would replace it while it still counted for the service.
local key = {{'s', ARGV[2]}, {'d', ARGV[3]}, {'c', ARGV[4]}}
for i, field in ipairs(key) do
  if fields[i] and fields[i] ~= field[2] then
    return false
  end
end
for i, field in ipairs(key) do
  if not fields[i] then
    redis.call('HSET', KEYS[1], field[1], field[2])
  end
end
-- Registering again never moves the last use back, as a push's touch never does: one stored
-- later than now was recorded before the clock was set back. (A stored one that is not plain
-- seconds, which another writer damaged, is replaced.)
local used = ARGV[8]
local stored = fields[6]
if stored and #stored <= 12 and string.match(stored, '^%d+$') and tonumber(stored) > tonumber(used) then
  used = stored
end
-- (No account at all: a hash another writer damaged, which this update repairs.)
if fields[4] and fields[4] ~= ARGV[5] then
  redis.call('ZREM', ARGV[9] .. fields[4], ARGV[1])
end
redis.call('HSET', KEYS[1], 'a', ARGV[5], 't', ARGV[6], 'u', used)
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], 'v', ARGV[7])
else
  redis.call('HDEL', KEYS[1], 'v')
end
redis.call('ZADD', KEYS[2], used, ARGV[1])
redis.call('ZADD', KEYS[3], used, ARGV[1])
return fields[5]
