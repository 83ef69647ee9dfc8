-- hostile: removes the limit hooks
-- expect: attempt to index a nil value (global 'debug')
debug.sethook() -- REJECT HERE
return { name = "debug_hook", params = {}, loss = function(b) return b.policy_chosen_logps end }
