-- hostile: a coroutine (its own stack, its own hooks)
-- expect: attempt to index a nil value (global 'coroutine')
local co = coroutine.wrap(function() while true do end end) -- REJECT HERE
return { name = "coroutine_wrap", params = {}, loss = function(b) return b.policy_chosen_logps end }
