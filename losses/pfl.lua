-- losses/pfl.lua — PFL, the policy-focused loss.
--
-- Source: Lu et al. 2024, "Discovering Preference Optimization Algorithms
-- with and for Large Language Models", Table 1 / appendix (PFL); reference
-- implementation policy_focused_loss (focus_scale 2, beta applied to the
-- logits).
--
--   rho  = beta ((pc - pr) - (rc - rr))
--   loss = -log sigmoid(rho) / focus_scale      where pc > pr  (policy "correct")
--          relu(1 - rho) * focus_scale          elsewhere
--
-- The switch tests the raw policy log-probs pc > pr (not rho), as the
-- reference code does; it carries no gradient.
return {
  name = "pfl",
  params = { beta = 0.05, focus_scale = 2.0 },
  loss = function(b, p)
    local z = (b.policy_chosen_logps - b.policy_rejected_logps)
            - (b.reference_chosen_logps - b.reference_rejected_logps)
    local rho = p.beta * z
    local correct = gt(b.policy_chosen_logps, b.policy_rejected_logps)
    return where(correct, -logsigmoid(rho) / p.focus_scale, relu(1 - rho) * p.focus_scale)
  end,
}
