-- hostile: an error object that is a tensor
-- expect: error called with a tensor value
return {
  name = "error_tensor",
  params = {},
  loss = function(b)
    error(b.policy_chosen_logps) -- REJECT HERE
  end,
}
