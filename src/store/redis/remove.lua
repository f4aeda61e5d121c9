-- Removes registrations of one domain: the named node (ARGV[3] ~= '') if it still holds the token
-- ARGV[6] (any token when ARGV[6] is ''), or up to ARGV[4] of those last used before ARGV[5] (a
-- sweep).
-- KEYS: 1 the domain's last-use set.
-- ARGV: 1 registration key stem, 2 account key stem, 3 node, 4 batch, 5 before, 6 token.
-- Answers how many nodes it took (a sweep batch's size, ghosts included), how many the domain
-- still holds, then each removed one as service \n device \n channel \n node.
local nodes
if ARGV[3] ~= '' then
  if ARGV[6] ~= '' and redis.call('HGET', ARGV[1] .. ARGV[3], 't') ~= ARGV[6] then
    return {'0', tostring(redis.call('ZCARD', KEYS[1]))}
  end
  nodes = {ARGV[3]}
else
  nodes = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[5], 'LIMIT', 0, ARGV[4])
end
local removed = {tostring(#nodes), ''}
for _, node in ipairs(nodes) do
  local key = ARGV[1] .. node
  local fields = redis.call('HMGET', key, 's', 'd', 'c', 'a')
  redis.call('ZREM', KEYS[1], node)
  -- A hash another writer damaged (a field missing) goes too, and is reported with what it
  -- still holds of its key: the store finds the count and index entry of one that lost its
  -- service by that index entry. Only a node whose hash is gone reports nothing.
  redis.call('DEL', key)
  if fields[4] then
    redis.call('ZREM', ARGV[2] .. fields[4], node)
  end
  if fields[1] or fields[2] or fields[3] then
    table.insert(removed, (fields[1] or '') .. '\n' .. (fields[2] or '') .. '\n' .. (fields[3] or '') .. '\n' .. node)
  end
end
removed[2] = tostring(redis.call('ZCARD', KEYS[1]))
return removed
