-- hostile: three tensors whose broadcast has more elements than int64 holds
-- (2^21 each way in the tests' 8 MiB limit: 2^63); on shape-only tensors no
-- allocation fails first, so the binding must count before the op
-- expect: where: a tensor of ... elements (limit hit: ... of tensors per call)
local function grow(x, dim, n)
  for _ = 1, n do x = cat(x, x, dim) end
  return x
end
return {
  name = "where_overflow",
  params = {},
  loss = function(b)
    local a = grow(tensor({ { { 1 } } }), 1, 21)
    local c = grow(tensor({ { { 1 } } }), 2, 21)
    local d = grow(tensor({ { { 1 } } }), 3, 21)
    local w = where(a, c, d) -- REJECT HERE
    return b.policy_chosen_logps
  end,
}
