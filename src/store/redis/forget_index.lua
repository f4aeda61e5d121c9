-- Deletes a key index entry only if it still points at the registration just removed. A key of
-- another type (another writer's) points at nothing and stays: refused, it would stop the
-- removal half-way, the rest of a sweep batch keeping their index entries and counts.
-- KEYS: 1 the index entry. ARGV: 1 domain \n node.
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
