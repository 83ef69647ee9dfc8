-- hostile: use() with a path, to load a file outside losses/
-- expect: use: a loss name is lowercase letters, digits and _
local lib = use("../../../etc/passwd") -- REJECT HERE
return { name = "use_escape", params = {}, loss = function(b) return b.policy_chosen_logps end }
