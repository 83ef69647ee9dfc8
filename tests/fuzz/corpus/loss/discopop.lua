-- tests/data/loss/discopop.lua — DiscoPOP / LRML (Lu et al. 2024), the
-- issue's worked example in its float-stable form, a test fixture for the
-- shape summary (the library's own copy is losses/discopop.lua).
return {
  name = "discopop",
  params = { beta = 0.05, tau = 0.05 },
  loss = function(b, p)
    local logits = (b.policy_chosen_logps - b.policy_rejected_logps)
                 - (b.reference_chosen_logps - b.reference_rejected_logps)
    local rho = p.beta * logits
    local x = rho / p.tau
    return sigmoid(-x) * -logsigmoid(rho) + exp(logsigmoid(x) - rho)
  end,
}
