-- hostile: twice as many losses as pairs
-- expect: loss returned a tensor of shape (8); expected a tensor of shape (4)
return {
  name = "wrong_shape",
  params = {},
  loss = function(b) -- REJECT HERE
    return cat(b.policy_chosen_logps, b.policy_rejected_logps)
  end,
}
