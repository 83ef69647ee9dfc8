-- losses/exo_pair.lua — pairwise EXO (efficient exact optimisation).
--
-- Sources: Ji et al. 2024, "Towards Efficient Exact Optimization of Language
-- Model Alignment", eq. 16 with K = 2; TRL DPOTrainer loss_type="exo_pair".
--
-- KL(q || p) between the policy's pair distribution q = softmax(beta * [Δc, Δr])
-- and the smoothed label distribution p = [1 - eps, eps]:
--
--   z    = (pc - pr) - (rc - rr),  q_w = sigmoid(beta z),  q_l = sigmoid(-beta z)
--   loss = q_w (log q_w - log(1 - eps)) + q_l (log q_l - log eps)
--
-- eps = label_smoothing must be > 0 (TRL raises otherwise; the EXO paper uses
-- 1e-3, the default here). log q uses logsigmoid, so q log q is 0 * finite
-- (never 0 * -inf) when q underflows.
return {
  name = "exo_pair",
  params = { beta = 0.1, label_smoothing = 1e-3 },
  loss = function(b, p)
    local eps = p.label_smoothing
    if not (eps > 0 and eps < 1) then
      error("exo_pair: label_smoothing must lie in (0, 1)")
    end
    local z = (b.policy_chosen_logps - b.policy_rejected_logps)
            - (b.reference_chosen_logps - b.reference_rejected_logps)
    local rho = p.beta * z
    return sigmoid(rho) * (logsigmoid(rho) - math.log(1 - eps))
         + sigmoid(-rho) * (logsigmoid(-rho) - math.log(eps))
  end,
}
