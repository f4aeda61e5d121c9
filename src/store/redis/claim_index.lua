-- Points a key's index entry at the registration just inserted, unless a concurrent register of
-- the same key changed the entry since this one read it.
-- KEYS: 1 the index entry. ARGV: 1 domain \n node of the new registration, 2 what the register
-- read there ('' for nothing).
local held = redis.call('GET', KEYS[1])
if (held == false and ARGV[2] == '') or held == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
