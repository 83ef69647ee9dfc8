-- losses/simpo.lua — Simple Preference Optimisation (reference-free).
--
-- Source: Meng et al. 2024, "SimPO: Simple Preference Optimization with a
-- Reference-Free Reward", eq. 6: the implicit reward is the length-averaged
-- policy log-prob, with a target reward margin gamma.
--
--   loss = -log sigmoid( beta pc / max(Lc,1) - beta pr / max(Lr,1) - gamma )
--
-- No reference log-probs are read. Defaults beta = 2.0, gamma = 1.0 (gamma /
-- beta = 0.5), within the paper's recommended ranges (beta 2.0-2.5, gamma
-- 0.5-1.5). gamma is in reward units, as in the paper (the SimPO code's
-- gamma_beta_ratio is gamma / beta).
return {
  name = "simpo",
  params = { beta = 2.0, gamma = 1.0 },
  loss = function(b, p)
    local d = b.policy_chosen_logps / maximum(b.chosen_lengths, 1)
            - b.policy_rejected_logps / maximum(b.rejected_lengths, 1)
    return -logsigmoid(p.beta * d - p.gamma)
  end,
}
