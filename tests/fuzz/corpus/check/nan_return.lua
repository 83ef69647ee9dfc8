-- hostile: NaN losses (0/0); loss_eval returns them, the checker rejects them
-- expect (check): nonfinite_value
return {
  name = "nan_return",
  params = {},
  loss = function(b)
    return (b.policy_chosen_logps - b.policy_chosen_logps) / 0
  end,
}
