-- losses/aot_unpaired.lua — AOT (Alignment via Optimal Transport), unpaired
-- form: the distribution of chosen log-ratios should dominate that of
-- rejected log-ratios, quantile by quantile, with no pairing between them.
--
-- Sources: Melnyk et al. 2024, "Distributional Preference Alignment of LLMs
-- via Optimal Transport" (arXiv 2406.05882), the unpaired AOT objective; TRL
-- DPOTrainer loss_type="aot_unpaired" (trl/trainer/dpo_trainer.py, current
-- main; the same formula was loss_type="aot_pair" in older TRL releases).
--
--   dc    = pc - rc                    chosen log-ratios                (B)
--   dr    = pr - rr                    rejected log-ratios              (B)
--   delta = sort(dc) - sort(dr)        k-th smallest against k-th smallest (B)
--   loss  = -(1 - eps) log sigmoid(beta delta) - eps log sigmoid(-beta delta)
--
-- The two sorts are separate, so loss[k] belongs to the k-th quantile and not
-- to pair k: only the batch mean is meaningful, and a larger batch gives finer
-- quantiles. The gradient of delta[k] goes back through each sort to the
-- chosen and the rejected response that are k-th smallest on their side. At a
-- tie within one side the loss has a kink; ties keep batch order here (TRL's
-- torch.sort does not promise one), which changes only the subgradient there.
-- eps = label_smoothing and beta default to TRL's 0 and 0.1; logsigmoid keeps
-- the loss finite (linear growth) for any |beta delta|.
return {
  name = "aot_unpaired",
  params = { beta = 0.1, label_smoothing = 0.0 },
  loss = function(b, p)
    local dc = b.policy_chosen_logps - b.reference_chosen_logps
    local dr = b.policy_rejected_logps - b.reference_rejected_logps
    local rho = p.beta * (sort(dc) - sort(dr))
    local eps = p.label_smoothing
    if eps == 0 then
      return -logsigmoid(rho)
    end
    return -(1 - eps) * logsigmoid(rho) - eps * logsigmoid(-rho)
  end,
}
