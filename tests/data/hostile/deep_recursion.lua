-- hostile: recursion without end
-- expect: calls nested too deep (limit hit: call depth ...)
local function f(n)
  return 1 + f(n + 1) -- REJECT HERE
end
return {
  name = "deep_recursion",
  params = {},
  loss = function(b)
    return b.policy_chosen_logps * f(0)
  end,
}
