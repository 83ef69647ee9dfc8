-- hostile: reaches for the strings' shared metatable to change it
-- expect: attempt to call a nil value (global 'getmetatable')
local mt = getmetatable("") -- REJECT HERE
mt.__index = function() return 1 end
return { name = "string_meta", params = {}, loss = function(b) return b.policy_chosen_logps end }
