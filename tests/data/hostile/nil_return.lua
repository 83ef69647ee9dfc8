-- hostile: no return at all
-- expect: loss returned nil
return {
  name = "nil_return",
  params = {},
  loss = function(b) -- REJECT HERE
    local x = b.policy_chosen_logps
  end,
}
