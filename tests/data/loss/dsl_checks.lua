-- tests/data/loss/dsl_checks.lua — the loss DSL's semantics, asserted from
-- inside a loss (tests/test_lua_tensor.c runs it): numbers in give numbers
-- out, dims are 1-based, variance is the population one, comparisons are
-- 0/1, and so on. Every expected value is worked out by hand in its comment.
local function near(a, b, tol, what)
  assert(math.abs(a - b) <= (tol or 1e-6), what .. ": got " .. tostring(a) .. ", want " .. tostring(b))
end

local function list_near(t, want, what)
  local got = t:tolist()
  assert(#got == #want, what .. ": length " .. #got .. ", want " .. #want)
  for i = 1, #want do
    if type(want[i]) == "table" then
      for j = 1, #want[i] do near(got[i][j], want[i][j], 1e-6, what .. "[" .. i .. "][" .. j .. "]") end
    else
      near(got[i], want[i], 1e-6, what .. "[" .. i .. "]")
    end
  end
end

local function numbers()
  -- all-number arguments give numbers, computed in double
  assert(type(exp(0)) == "number", "exp(0) is a number")
  near(exp(0), 1, 0, "exp(0)")
  near(log(1), 0, 0, "log(1)")
  near(log1p(0), 0, 0, "log1p(0)")
  near(expm1(0), 0, 0, "expm1(0)")
  near(sqrt(4), 2, 0, "sqrt(4)")
  near(abs(-2), 2, 0, "abs(-2)")
  near(sign(-3), -1, 0, "sign(-3)")
  near(sign(0), 0, 0, "sign(0)")
  near(sigmoid(0), 0.5, 0, "sigmoid(0)")
  near(logsigmoid(0), -math.log(2), 1e-15, "logsigmoid(0)")
  near(logsigmoid(-1000), -1000, 0, "logsigmoid(-1000) is stable")
  near(softplus(1000), 1000, 0, "softplus(1000) is stable")
  near(tanh(0), 0, 0, "tanh(0)")
  near(relu(-1), 0, 0, "relu(-1)")
  near(gelu(0), 0, 0, "gelu(0)")
  near(clamp(5, 0, 1), 1, 0, "clamp(5, 0, 1)")
  near(clamp(-5, nil, 1), -5, 0, "clamp without lo")
  near(minimum(1, 2), 1, 0, "minimum")
  near(maximum(1, 2), 2, 0, "maximum")
  near(where(1, 2, 3), 2, 0, "where(1, 2, 3)")
  near(where(0, 2, 3), 3, 0, "where(0, 2, 3)")
  near(pow(2, 3), 8, 0, "pow(2, 3)")
  near(gt(2, 1), 1, 0, "gt(2, 1)")
  near(lt(2, 1), 0, 0, "lt(2, 1)")
  near(ge(1, 1), 1, 0, "ge(1, 1)")
  near(le(2, 1), 0, 0, "le(2, 1)")
  near(sum(3), 3, 0, "sum(3)")
  near(var(3), 0, 0, "var(3)")
  near(detach(2), 2, 0, "detach(2)")
end

local function making()
  local v = tensor({ 1, 2, 3 })
  assert(v:shape()[1] == 3 and #v:shape() == 1, "tensor({1,2,3}) has shape (3)")
  assert(#v == 3, "#v is the first dim")
  local m = tensor({ { 1, 2 }, { 3, 4 } })
  assert(m:size(1) == 2 and m:size(2) == 2 and m:size(-1) == 2, "size(d), 1-based and negative")
  assert(m:numel() == 4 and m:dim() == 2, "numel and dim")
  assert(tensor(5):dim() == 0 and tensor(5):item() == 5, "a 0-D tensor")
  list_near(zeros_like(v), { 0, 0, 0 }, "zeros_like")
  list_near(ones_like(v), { 1, 1, 1 }, "ones_like")
  list_near(full_like(v, 7), { 7, 7, 7 }, "full_like")
  list_near(cat(v, v), { 1, 2, 3, 1, 2, 3 }, "cat")
  list_near(cat(m, m, 2), { { 1, 2, 1, 2 }, { 3, 4, 3, 4 } }, "cat along dim 2")
  assert(tostring(v) == "tensor(shape (3): 1, 2, 3)", "tostring: " .. tostring(v))
end

local function arithmetic()
  local v = tensor({ 1, 2, 4 })
  list_near(v + 1, { 2, 3, 5 }, "v + 1")
  list_near(1 - v, { 0, -1, -3 }, "1 - v")
  list_near(v * v, { 1, 4, 16 }, "v * v")
  list_near(v / 2, { 0.5, 1, 2 }, "v / 2")
  list_near(2 / v, { 2, 1, 0.5 }, "2 / v")
  list_near(v ^ 2, { 1, 4, 16 }, "v ^ 2")
  list_near(2 ^ v, { 2, 4, 16 }, "2 ^ v")
  list_near(-v, { -1, -2, -4 }, "-v")
  list_near(v:exp():log(), { 1, 2, 4 }, "methods chain")
  list_near(clamp(v, 1.5, 3), { 1.5, 2, 3 }, "clamp")
  list_near(minimum(v, 2), { 1, 2, 2 }, "minimum with a number")
  local x = tensor({ -1, 0, 2 })
  list_near(where(gt(x, 0), x, 0), { 0, 0, 2 }, "where(gt(x, 0), x, 0) is relu")
  -- broadcasting: (2, 1) against (2) gives (2, 2)
  list_near(gt(tensor({ { 1 }, { 3 } }), tensor({ 2, 0 })), { { 0, 1 }, { 1, 1 } }, "gt broadcasts")
  list_near(le(x, 0), { 1, 1, 0 }, "le")
end

local function reductions()
  local m = tensor({ { 1, 2 }, { 3, 4 } })
  near(sum(m):item(), 10, 0, "sum of all")
  list_near(sum(m, 1), { 4, 6 }, "sum over dim 1 (rows)")
  list_near(sum(m, -1), { 3, 7 }, "sum over the last dim")
  assert(sum(m, 2, true):size(2) == 1, "keepdim keeps the dim")
  list_near(mean(m, 2), { 1.5, 3.5 }, "mean over dim 2")
  -- population variance of 1, 2, 3, 4: mean 2.5, squares 2.25 0.25 0.25 2.25 -> 5 / 4
  near(var(tensor({ 1, 2, 3, 4 })):item(), 1.25, 1e-6, "var divides by n")
  near(std(tensor({ 1, 2, 3, 4 })):item(), math.sqrt(1.25), 1e-6, "std")
  list_near(var(m, 1), { 1, 1 }, "var over dim 1")
  near(logsumexp(tensor({ 0, 0 })):item(), math.log(2), 1e-6, "logsumexp")
  list_near(softmax(tensor({ 0, 0 })), { 0.5, 0.5 }, "softmax")
  list_near(log_softmax(tensor({ 0, 0 })), { -math.log(2), -math.log(2) }, "log_softmax")
  list_near(sort(tensor({ 3, 1, 2 })), { 1, 2, 3 }, "sort")
  list_near(sort(tensor({ { 2, 1 }, { 0, 5 } }), 1), { { 0, 1 }, { 2, 5 } }, "sort along dim 1")
  list_near(logsumexp(m, 1), { math.log(math.exp(1) + math.exp(3)), math.log(math.exp(2) + math.exp(4)) }, "logsumexp over dim 1")
end

return {
  name = "dsl_checks",
  params = {},
  loss = function(b)
    numbers()
    making()
    arithmetic()
    reductions()
    assert(b.batch_size == 4 and b.step == 0 and b.progress == 0, "batch numbers")
    assert(b.policy_chosen_token_logps == nil, "absent token fields are nil")
    return -logsigmoid(b.policy_chosen_logps - b.policy_rejected_logps)
  end,
}
