-- A new registration in one domain's slot: make room in the account (its least recently used
-- in the domain go; an import, ARGV[13] = '0', is refused instead) and refuse it if the domain
-- would still hold its cap, then store it. The caps are checked before anything is replaced,
-- so a refusal changes nothing.
-- KEYS: 1 the registration hash, 2 the domain's last-use set, 3 the account's last-use set.
-- ARGV: 1 node, 2 service, 3 device, 4 channel, 5 account, 6 token, 7 second token ('' = none),
--       8 secret, 9 last use, 10 max per account, 11 max per domain, 12 registration key stem,
--       13 '1' to make room in the account, '0' to refuse.
-- Answers {'collision'}, {'account-full'}, {'full'}, or {'ok', evicted...} with each evicted
-- one as service \n device \n channel \n node.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'collision'}
end
local node = ARGV[1]
local held = redis.call('ZCARD', KEYS[3])
local cap = tonumber(ARGV[10])
local replaced = 0
if held >= cap then
  if ARGV[13] == '0' then
    return {'account-full'}
  end
  replaced = held - cap + 1
end
if redis.call('ZCARD', KEYS[2]) - replaced >= tonumber(ARGV[11]) then
  return {'full'}
end
local answer = {'ok'}
if replaced > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[3], 0, replaced - 1)) do
    local key = ARGV[12] .. old
    local fields = redis.call('HMGET', key, 's', 'd', 'c')
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[2], old)
    redis.call('ZREM', KEYS[3], old)
    if fields[1] or fields[2] or fields[3] then
      -- A hash another writer damaged goes too, reported like the remove script reports it.
      table.insert(answer, (fields[1] or '') .. '\n' .. (fields[2] or '') .. '\n' .. (fields[3] or '') .. '\n' .. old)
    end
  end
end
redis.call('HSET', KEYS[1], 's', ARGV[2], 'd', ARGV[3], 'c', ARGV[4], 'a', ARGV[5],
  't', ARGV[6], 'x', ARGV[8], 'u', ARGV[9])
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], 'v', ARGV[7])
end
redis.call('ZADD', KEYS[2], ARGV[9], node)
redis.call('ZADD', KEYS[3], ARGV[9], node)
return answer
