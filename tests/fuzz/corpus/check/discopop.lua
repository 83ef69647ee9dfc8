-- losses/discopop.lua — DiscoPOP, the log-ratio modulated loss (LRML).
--
-- Sources: Lu et al. 2024, "Discovering Preference Optimization Algorithms
-- with and for Large Language Models", eq. 5 (LRML in Table 1); TRL
-- DPOTrainer loss_type="discopop" (discopop_tau); the paper's reference
-- implementation (log_ratio_modulated_loss) for the beta convention: the
-- log-ratio difference is scaled by beta first, then divided by tau.
--
--   rho  = beta ((pc - pr) - (rc - rr))
--   w    = sigmoid(rho / tau)
--   loss = (1 - w) (-log sigmoid(rho)) + w exp(-rho)
--
-- Float-stable form: w exp(-rho) is computed as exp(logsigmoid(rho/tau) - rho)
-- (the product form is 0 * inf = NaN below rho ~ -89 in float32), and 1 - w as
-- sigmoid(-rho/tau) (no cancellation when w is near 1).
return {
  name = "discopop",
  params = { beta = 0.05, tau = 0.05 },
  loss = function(b, p)
    local z = (b.policy_chosen_logps - b.policy_rejected_logps)
            - (b.reference_chosen_logps - b.reference_rejected_logps)
    local rho = p.beta * z
    local x = rho / p.tau
    return sigmoid(-x) * -logsigmoid(rho) + exp(logsigmoid(x) - rho)
  end,
}
