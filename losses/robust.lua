-- losses/robust.lua — Robust DPO: an unbiased estimate of the DPO loss under
-- preference labels flipped with probability eps.
--
-- Sources: Chowdhury et al. 2024, "Provably Robust DPO: Aligning Language
-- Models with Noisy Feedback" (rDPO); TRL DPOTrainer loss_type="robust".
--
--   z    = (pc - pr) - (rc - rr)
--   loss = ( -(1 - eps) log sigmoid(beta z) + eps log sigmoid(-beta z) ) / (1 - 2 eps)
--
-- eps = label_smoothing in [0, 0.5). TRL's default eps is 0, which makes this
-- plain DPO; the default here (0.1) is an assumed 10% label-noise rate. The
-- loss is unbounded below (slope -eps/(1-2eps) per unit of beta z as
-- beta z -> +inf); that is the estimator, not an overflow.
return {
  name = "robust",
  params = { beta = 0.1, label_smoothing = 0.1 },
  loss = function(b, p)
    local z = (b.policy_chosen_logps - b.policy_rejected_logps)
            - (b.reference_chosen_logps - b.reference_rejected_logps)
    local rho = p.beta * z
    local eps = p.label_smoothing
    return (-(1 - eps) * logsigmoid(rho) + eps * logsigmoid(-rho)) / (1 - 2 * eps)
  end,
}
