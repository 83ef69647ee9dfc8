-- losses/nca_pair.lua — pairwise Noise Contrastive Alignment.
--
-- Sources: Chen et al. 2024, "Noise Contrastive Alignment of Language Models
-- with Explicit Rewards" (NCA, K = 2); TRL DPOTrainer loss_type="nca_pair".
--
--   r_c  = beta (pc - rc),  r_r = beta (pr - rr)
--   loss = -log sigmoid(r_c) - 0.5 log sigmoid(-r_c) - 0.5 log sigmoid(-r_r)
return {
  name = "nca_pair",
  params = { beta = 0.1 },
  loss = function(b, p)
    local rc = p.beta * (b.policy_chosen_logps - b.reference_chosen_logps)
    local rr = p.beta * (b.policy_rejected_logps - b.reference_rejected_logps)
    return -logsigmoid(rc) - 0.5 * logsigmoid(-rc) - 0.5 * logsigmoid(-rr)
  end,
}
