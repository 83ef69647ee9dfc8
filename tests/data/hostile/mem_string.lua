-- hostile: a string that doubles until memory runs out, at load time
-- expect: Lua heap exhausted (limit hit: ... Lua heap ...)
local s = "xxxxxxxxxxxxxxxx"
while true do
  s = s .. s -- REJECT HERE
end
