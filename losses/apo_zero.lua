-- losses/apo_zero.lua — Anchored Preference Optimisation, APO-zero.
--
-- Sources: D'Oosterlinck et al. 2024, "Anchored Preference Optimization and
-- Contrastive Revisions", eq. 7; TRL DPOTrainer loss_type="apo_zero". For
-- chosen outputs better than the model's own: raise the chosen likelihood,
-- lower the rejected one.
--
--   loss = (1 - sigmoid(beta (pc - rc))) + sigmoid(beta (pr - rr))
return {
  name = "apo_zero",
  params = { beta = 0.1 },
  loss = function(b, p)
    local rc = p.beta * (b.policy_chosen_logps - b.reference_chosen_logps)
    local rr = p.beta * (b.policy_rejected_logps - b.reference_rejected_logps)
    return sigmoid(-rc) + sigmoid(rr) -- 1 - sigmoid(rc) = sigmoid(-rc), no cancellation
  end,
}
