-- losses/dbaql.lua — DBAQL, the dynamic blended adaptive quantile loss.
--
-- Source: Lu et al. 2024, "Discovering Preference Optimization Algorithms
-- with and for Large Language Models", Table 1 / appendix (DBAQL); reference
-- implementation dynamic_blended_adaptive_quantile_loss (the current one:
-- beta first, then / 0.05 = tau; temperature 0.9, blend rate 1.0).
--
--   rho  = beta ((pc - pr) - (rc - rr))                         (B)
--   v    = var(rho / tau), the sample (Bessel, n - 1) variance, as torch's
--          default .var() in the reference code                 batch scalar
--   c    = blend_rate sigmoid(v)
--   loss = c (-log sigmoid(rho / T)) + (1 - c) exp(-rho T)
--
-- Float-stable form: with blend_rate = r, 1 - c = (1 - r) + r sigmoid(-v), and
-- r sigmoid(-v) exp(-rho T) is computed as r exp(logsigmoid(-v) - rho T): a
-- spread-out batch has sigmoid(-v) -> 0 while exp(-rho T) -> inf, and the
-- product form gives 0 * inf = NaN. The (1 - r) term is left out when r = 1
-- (the paper's value) for the same reason. v is not detached (as in the
-- reference code). For B = 1 the sample variance is undefined (torch: NaN);
-- here it is taken as 0.
return {
  name = "dbaql",
  params = { beta = 0.05, tau = 0.05, temperature = 0.9, blend_rate = 1.0 },
  loss = function(b, p)
    local z = (b.policy_chosen_logps - b.policy_rejected_logps)
            - (b.reference_chosen_logps - b.reference_rejected_logps)
    local rho = p.beta * z
    local n = b.batch_size
    local v = var(rho / p.tau) * (n / math.max(n - 1, 1))
    local r = p.blend_rate
    local T = p.temperature
    local out = r * sigmoid(v) * -logsigmoid(rho / T)
              + r * exp(logsigmoid(-v) - rho * T)
    if r ~= 1 then
      out = out + (1 - r) * exp(-rho * T)
    end
    return out
  end,
}
