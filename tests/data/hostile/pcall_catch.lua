-- hostile: catches the limit error to keep running
-- expect: attempt to call a nil value (global 'pcall')
return {
  name = "pcall_catch",
  params = {},
  loss = function(b)
    pcall(function() while true do end end) -- REJECT HERE
    return b.policy_chosen_logps
  end,
}
