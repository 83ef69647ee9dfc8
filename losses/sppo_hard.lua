-- losses/sppo_hard.lua — Self-Play Preference Optimisation, hard labels.
--
-- Sources: Wu et al. 2024, "Self-Play Preference Optimization for Language
-- Model Alignment", eq. 4.7 of Algorithm 1 with the win probability set to 1
-- for the chosen and 0 for the rejected response; TRL DPOTrainer
-- loss_type="sppo_hard".
--
--   loss = (pc - rc - 1/(2 beta))^2 + (pr - rr + 1/(2 beta))^2
--
-- The log-ratios are not scaled by beta (beta only sets the targets), as in TRL.
return {
  name = "sppo_hard",
  params = { beta = 0.1 },
  loss = function(b, p)
    local t = 0.5 / p.beta
    local ec = b.policy_chosen_logps - b.reference_chosen_logps - t
    local er = b.policy_rejected_logps - b.reference_rejected_logps + t
    return ec * ec + er * er
  end,
}
