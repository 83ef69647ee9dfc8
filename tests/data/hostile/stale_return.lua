-- hostile: returns, in the second call, the tensor the first call made
-- expect (second call): loss returned a tensor from an earlier call
local kept
return {
  name = "stale_return",
  params = {},
  loss = function(b) -- REJECT HERE
    if kept then return kept end
    kept = -b.policy_chosen_logps
    return kept
  end,
}
