-- hostile: a string method through the string metatable, asking for 1 GB
-- expect: attempt to index a string value
local s = ("x"):rep(1e9) -- REJECT HERE
return { name = "string_rep", params = {}, loss = function(b) return b.policy_chosen_logps end }
