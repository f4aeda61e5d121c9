-- Deletes a key index entry only if it still points at the registration just removed.
-- KEYS: 1 the index entry. ARGV: 1 domain \n node.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
