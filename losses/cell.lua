-- losses/cell.lua — CELL, the combined exponential + logistic loss.
--
-- Source: Lu et al. 2024, "Discovering Preference Optimization Algorithms
-- with and for Large Language Models", Table 1 / appendix (CELL); reference
-- implementation combined_exp_logistic_loss (mixing alpha = 0.5).
--
--   rho  = beta ((pc - pr) - (rc - rr))
--   loss = alpha exp(-rho) + (1 - alpha) (-log sigmoid(rho))
--
-- The exponential term is the true value, not an overflow artefact: it leaves
-- float32 range (FLT_MAX ~ e^88.7) only where alpha e^-rho itself exceeds it,
-- i.e. rho < -88 at the default alpha (|logits| > 1760 at beta = 0.05).
return {
  name = "cell",
  params = { beta = 0.05, alpha = 0.5 },
  loss = function(b, p)
    local z = (b.policy_chosen_logps - b.policy_rejected_logps)
            - (b.reference_chosen_logps - b.reference_rejected_logps)
    local rho = p.beta * z
    return p.alpha * exp(-rho) - (1 - p.alpha) * logsigmoid(rho)
  end,
}
