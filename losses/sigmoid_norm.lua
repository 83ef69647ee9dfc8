-- losses/sigmoid_norm.lua — length-normalised DPO.
--
-- Sources: TRL DPOTrainer loss_type="sigmoid_norm" (huggingface/trl PR #5406);
-- Lambert et al. 2024, "Tulu 3: Pushing Frontiers in Open Language Model
-- Post-Training", sec. 5.1.2 eq. 6 (length-normalised DPO), after the length
-- normalisation of SimPO (Meng et al. 2024) but keeping the reference model.
--
--   d    = (pc - rc) / max(Lc, 1) - (pr - rr) / max(Lr, 1)
--   loss = -log sigmoid(beta d)
--
-- Lc, Lr: response token counts, clamped to at least 1 as TRL does. Default
-- beta = 5, the Tulu 3 setting (per-token log-ratios are ~1/length the size of
-- sequence ones; TRL's generic default beta = 0.1 gives almost no signal here).
return {
  name = "sigmoid_norm",
  params = { beta = 5.0 },
  loss = function(b, p)
    local d = (b.policy_chosen_logps - b.reference_chosen_logps) / maximum(b.chosen_lengths, 1)
            - (b.policy_rejected_logps - b.reference_rejected_logps) / maximum(b.rejected_lengths, 1)
    return -logsigmoid(p.beta * d)
  end,
}
