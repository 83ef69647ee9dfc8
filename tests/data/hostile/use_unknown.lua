-- hostile: use() of a loss that does not exist must fail, never fall back
-- expect: use: no loss named 'no_such_loss'
local lib = use("no_such_loss") -- REJECT HERE
return { name = "use_unknown", params = {}, loss = function(b) return b.policy_chosen_logps end }
