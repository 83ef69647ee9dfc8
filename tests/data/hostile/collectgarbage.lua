-- hostile: steers the collector
-- expect: attempt to call a nil value (global 'collectgarbage')
collectgarbage("stop") -- REJECT HERE
return { name = "collectgarbage", params = {}, loss = function(b) return b.policy_chosen_logps end }
