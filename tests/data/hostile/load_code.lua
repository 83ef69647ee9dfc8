-- hostile: compiles code at run time
-- expect: attempt to call a nil value (global 'load')
local f = load("return 1") -- REJECT HERE
return { name = "load_code", params = {}, loss = function(b) return b.policy_chosen_logps end }
