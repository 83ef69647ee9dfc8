-- losses/lrml.lua — LRML, the log-ratio modulated loss: the DiscoPOP paper's
-- name for DiscoPOP.
--
-- Source: Lu et al. 2024, "Discovering Preference Optimization Algorithms
-- with and for Large Language Models", Table 1 / appendix (LRML), reference
-- implementation log_ratio_modulated_loss (tau = 0.05, beta applied first).
--
--   rho  = beta ((pc - pr) - (rc - rr)),  w = sigmoid(rho / tau)
--   loss = (1 - w) (-log sigmoid(rho)) + w exp(-rho)
--
-- Same function as discopop.lua (which has the float-stable form); written
-- through use("discopop") so there is one definition.
return {
  name = "lrml",
  params = { beta = 0.05, tau = 0.05 },
  loss = function(b, p, s)
    return use("discopop").loss(b, { beta = p.beta, tau = p.tau }, s)
  end,
}
