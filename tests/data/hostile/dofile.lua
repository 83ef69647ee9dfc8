-- hostile: runs another file
-- expect: attempt to call a nil value (global 'dofile')
dofile("/etc/passwd") -- REJECT HERE
return { name = "dofile", params = {}, loss = function(b) return b.policy_chosen_logps end }
