-- hostile: a __gc finalizer that would hang lua_close (finalizers run
-- without hooks)
-- expect: attempt to call a nil value (global 'setmetatable')
setmetatable({}, { __gc = function() while true do end end }) -- REJECT HERE
return { name = "gc_finalizer", params = {}, loss = function(b) return b.policy_chosen_logps end }
