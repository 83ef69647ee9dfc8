-- losses/bco_pair.lua — pairwise Binary Classifier Optimisation.
--
-- Sources: Jung et al. 2024, "Binary Classifier Optimization for Large
-- Language Model Alignment"; TRL DPOTrainer loss_type="bco_pair".
--
-- Current TRL (running_mean = 0, the default): chosen and rejected are two
-- independent binary classifications of the implicit reward.
--
--   r_c  = beta (pc - rc),  r_r = beta (pr - rr)
--   loss = -log sigmoid(r_c) - log sigmoid(-r_r)
--
-- Older TRL (running_mean = 1): a reward shift delta, the running mean of the
-- per-batch mean reward m_n = mean([r_c ; r_r]) (detached), updated with the
-- current batch before use, as TRL's RunningMoments did for a scalar input:
--
--   delta_n = delta_{n-1} + (m_n - delta_{n-1}) / n     (delta_1 = m_1)
--   loss    = -log sigmoid(r_c - delta_n) - log sigmoid(-(r_r - delta_n))
--
-- delta_n and n live in the per-run state table s as plain numbers; no
-- gradient flows through delta.
return {
  name = "bco_pair",
  params = { beta = 0.1, running_mean = 0 },
  state = { delta = 0, count = 0 },
  loss = function(b, p, s)
    local rc = p.beta * (b.policy_chosen_logps - b.reference_chosen_logps)
    local rr = p.beta * (b.policy_rejected_logps - b.reference_rejected_logps)
    if p.running_mean ~= 0 then
      local m = detach(0.5 * (mean(rc) + mean(rr))):item()
      s.count = s.count + 1
      s.delta = s.delta + (m - s.delta) / s.count
      rc = rc - s.delta
      rr = rr - s.delta
    end
    return -logsigmoid(rc) - logsigmoid(-rr)
  end,
}
