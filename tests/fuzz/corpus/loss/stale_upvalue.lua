-- hostile: keeps a tensor from one call in an upvalue and uses it in the next
-- expect (second call): tensor used after its step ended
local kept
return {
  name = "stale_upvalue",
  params = {},
  loss = function(b)
    if kept then
      return kept + b.policy_chosen_logps -- REJECT HERE
    end
    kept = -b.policy_chosen_logps
    return kept
  end,
}
