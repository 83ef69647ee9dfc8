-- hostile: a scalar where one loss per pair is due
-- expect: loss returned a tensor of shape (); expected a tensor of shape (4)
return {
  name = "scalar_return",
  params = {},
  loss = function(b) -- REJECT HERE
    return mean(-logsigmoid(b.policy_chosen_logps - b.policy_rejected_logps))
  end,
}
