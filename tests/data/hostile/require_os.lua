-- hostile: require() to get os back
-- expect: attempt to call a nil value (global 'require')
local os = require("os") -- REJECT HERE
return { name = "require_os", params = {}, loss = function(b) return b.policy_chosen_logps end }
