-- hostile: reads a file
-- expect: attempt to index a nil value (global 'io')
local f = io.open("/etc/passwd") -- REJECT HERE
return { name = "io_open", params = {}, loss = function(b) return b.policy_chosen_logps end }
