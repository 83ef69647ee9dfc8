-- hostile: runs a process from inside the loss
-- expect: attempt to index a nil value (global 'os')
return {
  name = "os_execute",
  params = {},
  loss = function(b)
    os.execute("touch /tmp/prefrun-pwned") -- REJECT HERE
    return b.policy_chosen_logps
  end,
}
