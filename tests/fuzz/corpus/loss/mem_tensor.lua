-- hostile: a tensor that doubles until tensor memory runs out
-- expect: ... (limit hit: ... of tensors per call)
return {
  name = "mem_tensor",
  params = {},
  loss = function(b)
    local x = b.policy_chosen_logps
    while true do
      x = cat(x, x) -- REJECT HERE
    end
  end,
}
