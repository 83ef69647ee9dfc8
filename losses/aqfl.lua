-- losses/aqfl.lua — AQFL, the adaptive quantile feedback loss.
--
-- Source: Lu et al. 2024, "Discovering Preference Optimization Algorithms
-- with and for Large Language Models", Table 1 / appendix (AQFL); reference
-- implementation adaptive_quantile_feedback_loss (the current one: beta
-- first, then / 0.05 = tau; quantile_update_rate 0.05, distance_scale 0.1).
--
--   rho  = beta ((pc - pr) - (rc - rr)),  x = rho / tau        (B)
--   sd   = std(x), the sample (Bessel, n - 1) standard deviation, as torch's
--          default .std() in the reference code
--   q0   = sd * mean(sigmoid(-x))
--   q    = q0 + update_rate (sigmoid(mean(x)) - q0)             batch scalar
--   w    = sigmoid(distance_scale |x - q|)
--   loss = w (-log sigmoid(rho)) + (1 - w) relu(1 - rho)
--
-- Batch statistics are not detached (as in the reference code). For B = 1 the
-- sample std is undefined (torch gives NaN); here it is taken as 0. sqrt is
-- applied to max(var, 1e-30) so that a batch of equal logits (var = 0) gets
-- a zero gradient through sd instead of 0 * inf = NaN; the value changes by
-- at most 1e-15.
return {
  name = "aqfl",
  params = { beta = 0.05, tau = 0.05, update_rate = 0.05, distance_scale = 0.1 },
  loss = function(b, p)
    local z = (b.policy_chosen_logps - b.policy_rejected_logps)
            - (b.reference_chosen_logps - b.reference_rejected_logps)
    local rho = p.beta * z
    local x = rho / p.tau
    local n = b.batch_size
    local bessel = n / math.max(n - 1, 1)
    local sd = sqrt(maximum(var(x) * bessel, 1e-30))
    local q0 = sd * mean(sigmoid(-x))
    local q = q0 + p.update_rate * (sigmoid(mean(x)) - q0)
    local d = p.distance_scale * abs(x - q)
    return sigmoid(d) * -logsigmoid(rho) + sigmoid(-d) * relu(1 - rho) -- 1 - sig(d) = sig(-d)
  end,
}
