-- losses/aql.lua — AQL, the adaptive quantile loss.
--
-- Source: Lu et al. 2024, "Discovering Preference Optimization Algorithms
-- with and for Large Language Models", Table 1 / appendix (AQL); reference
-- implementation adaptive_quantile_loss (the current one, which scales by
-- beta first and then divides by 0.05 = tau; percentile 0.5, moving weight
-- 0.01).
--
--   rho  = beta ((pc - pr) - (rc - rr)),  x = rho / tau        (B)
--   m    = percentile + moving_weight (sigmoid(mean(x)) - percentile)   batch scalar
--   q    = sigmoid(-(x - m))
--   loss = q (-log sigmoid(rho)) + (1 - q) relu(1 - rho)
--
-- m is a batch statistic and, as in the reference code, not detached: every
-- pair's loss depends (weakly) on every pair's logits. 1 - q is written
-- sigmoid(x - m).
return {
  name = "aql",
  params = { beta = 0.05, tau = 0.05, percentile = 0.5, moving_weight = 0.01 },
  loss = function(b, p)
    local z = (b.policy_chosen_logps - b.policy_rejected_logps)
            - (b.reference_chosen_logps - b.reference_rejected_logps)
    local rho = p.beta * z
    local x = rho / p.tau
    local m = p.percentile + p.moving_weight * (sigmoid(mean(x)) - p.percentile)
    return sigmoid(m - x) * -logsigmoid(rho) + sigmoid(x - m) * relu(1 - rho)
  end,
}
