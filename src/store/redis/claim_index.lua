-- Points a key's index entry at the registration just inserted, unless a concurrent register of
-- the same key changed the entry since this one read it.
-- KEYS: 1 the index entry. ARGV: 1 domain \n node of the new registration, 2 what the register
-- read there ('' for nothing).
-- A key of another type (another writer's) reads as no entry, as the register read it.
local held = redis.pcall('GET', KEYS[1])
if type(held) == 'table' then
  held = false
end
if (held == false and ARGV[2] == '') or held == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
