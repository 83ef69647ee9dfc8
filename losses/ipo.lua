-- losses/ipo.lua — Identity Preference Optimisation.
--
-- Sources: Azar et al. 2023, "A General Theoretical Paradigm to Understand
-- Learning from Human Preferences", eq. 17 (beta here is the paper's tau);
-- TRL DPOTrainer loss_type="ipo".
--
-- Current TRL (length_normalize = 1, the default): the log-ratios are divided
-- by the response token counts before the difference is taken. TRL's comment:
-- the sequence log-probs are token sums, so the square would scale with
-- length; TRL confirmed with the IPO authors that the paper's results used
-- the per-token form. Lengths are clamped to at least 1, as TRL does.
--
--   d    = (pc - rc) / max(Lc, 1) - (pr - rr) / max(Lr, 1)
--   loss = (d - 1 / (2 beta))^2
--
-- Older TRL, and the IPO baseline of the DiscoPOP paper (length_normalize = 0):
--
--   z    = (pc - pr) - (rc - rr)
--   loss = (z - 1 / (2 beta))^2
return {
  name = "ipo",
  params = { beta = 0.1, length_normalize = 1 },
  loss = function(b, p)
    local dc = b.policy_chosen_logps - b.reference_chosen_logps
    local dr = b.policy_rejected_logps - b.reference_rejected_logps
    local d
    if p.length_normalize ~= 0 then
      d = dc / maximum(b.chosen_lengths, 1) - dr / maximum(b.rejected_lengths, 1)
    else
      d = dc - dr
    end
    local e = d - 1 / (2 * p.beta)
    return e * e
  end,
}
