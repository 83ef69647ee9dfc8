-- losses/apo_down.lua — Anchored Preference Optimisation, APO-down.
--
-- Sources: D'Oosterlinck et al. 2024, "Anchored Preference Optimization and
-- Contrastive Revisions", eq. 8; TRL DPOTrainer loss_type="apo_down". For
-- chosen outputs worse than the model's own: lower both likelihoods, the
-- rejected one more.
--
--   z    = (pc - rc) - (pr - rr)
--   loss = sigmoid(beta (pc - rc)) + (1 - sigmoid(beta z))
return {
  name = "apo_down",
  params = { beta = 0.1 },
  loss = function(b, p)
    local dc = b.policy_chosen_logps - b.reference_chosen_logps
    local dr = b.policy_rejected_logps - b.reference_rejected_logps
    return sigmoid(p.beta * dc) + sigmoid(-p.beta * (dc - dr)) -- 1 - sig(x) = sig(-x)
  end,
}
