-- hostile: string.dump, to make a binary chunk
-- expect: attempt to index a nil value (global 'string')
local code = string.dump(function() end) -- REJECT HERE
return { name = "string_dump", params = {}, loss = function(b) return b.policy_chosen_logps end }
