-- hostile: a to-be-closed variable, the other way to run code at scope exit
-- expect: variable 'x' got a non-closable value
return {
  name = "close_var",
  params = {},
  loss = function(b)
    local x <close> = b.policy_chosen_logps -- REJECT HERE
    return b.policy_chosen_logps
  end,
}
