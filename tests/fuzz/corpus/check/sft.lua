-- losses/sft.lua — supervised fine-tuning on the chosen responses.
--
-- Source: TRL DPOTrainer loss_type="sft": the token-level cross-entropy of the
-- chosen completions, averaged over every chosen token in the batch, expanded
-- to one equal value per pair (so the host's mean is the same number). Used
-- as a term in mixtures (RPO = DPO + alpha * SFT, MPO).
--
--   loss_i = -sum_j pc_j / max(sum_j Lc_j, 1)      for every pair i
--
-- pc is the summed log-prob of the chosen response, so sum_j pc_j / sum_j Lc_j
-- is the mean per-token log-prob over the batch's chosen tokens. No beta.
return {
  name = "sft",
  params = {},
  loss = function(b)
    local nll = -sum(b.policy_chosen_logps) / maximum(sum(b.chosen_lengths), 1)
    return zeros_like(b.policy_chosen_logps) + nll
  end,
}
