-- losses/aot.lua — AOT (Alignment via Optimal Transport), paired form: the
-- distribution of the policy's log-ratio margins should dominate that of the
-- reference's, quantile by quantile.
--
-- Sources: Melnyk et al. 2024, "Distributional Preference Alignment of LLMs
-- via Optimal Transport" (arXiv 2406.05882), the paired AOT objective; TRL
-- DPOTrainer loss_type="aot" (trl/trainer/dpo_trainer.py, current main).
--
--   m     = pc - pr                    the policy's margins             (B)
--   m_ref = rc - rr                    the reference's margins          (B)
--   delta = sort(m) - sort(m_ref)      k-th smallest against k-th smallest (B)
--   loss  = -(1 - eps) log sigmoid(beta delta) - eps log sigmoid(-beta delta)
--
-- The two sorts are separate, so loss[k] belongs to the k-th quantile and not
-- to pair k: only the batch mean is meaningful, and a larger batch gives finer
-- quantiles (the paper's advice). The gradient of delta[k] goes back through
-- the sort to the pair whose margin is k-th smallest. At a tie of two margins
-- the loss has a kink; ties keep batch order here (TRL's torch.sort does not
-- promise one), which changes nothing but the choice of subgradient there.
-- eps = label_smoothing and beta default to TRL's 0 and 0.1; logsigmoid keeps
-- the loss finite (linear growth) for any |beta delta|.
return {
  name = "aot",
  params = { beta = 0.1, label_smoothing = 0.0 },
  loss = function(b, p)
    local m = b.policy_chosen_logps - b.policy_rejected_logps
    local m_ref = b.reference_chosen_logps - b.reference_rejected_logps
    local rho = p.beta * (sort(m) - sort(m_ref))
    local eps = p.label_smoothing
    if eps == 0 then
      return -logsigmoid(rho)
    end
    return -(1 - eps) * logsigmoid(rho) - eps * logsigmoid(-rho)
  end,
}
