-- losses/padll.lua — PADLL, the performance-adaptive decay logistic loss.
--
-- Source: Lu et al. 2024, "Discovering Preference Optimization Algorithms
-- with and for Large Language Models", Table 1 / appendix (PADLL); reference
-- implementation performance_adaptive_decay_logistic_loss (base_decay 0.9,
-- mismatch_penalty 0.5).
--
--   z    = (pc - pr) - (rc - rr)
--   loss = base_decay (1 - mismatch_penalty [z < 0]) (-log sigmoid(beta z))
--
-- [z < 0] (a "mismatch": the policy's margin is below the reference's) is a
-- 0/1 weight with no gradient; the reference code tests the unscaled z.
return {
  name = "padll",
  params = { beta = 0.05, base_decay = 0.9, mismatch_penalty = 0.5 },
  loss = function(b, p)
    local z = (b.policy_chosen_logps - b.policy_rejected_logps)
            - (b.reference_chosen_logps - b.reference_rejected_logps)
    local weight = p.base_decay * (1 - p.mismatch_penalty * lt(z, 0))
    return weight * -logsigmoid(p.beta * z)
  end,
}
