-- losses/kto_pair.lua — paired KTO, as TRL's DPOTrainer had it and as the
-- DiscoPOP paper used it as a baseline.
--
-- Sources: Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect
-- Theoretic Optimization" (HALOs report, eq. 7); TRL DPOTrainer
-- loss_type="kto_pair" (since removed from TRL in favour of KTOTrainer);
-- Lu et al. 2024 (DiscoPOP) reference implementation kto_pair_loss.
--
-- The KL reference point of the chosen half is estimated from the rejected
-- half and vice versa, as batch means clamped at 0 (not detached, as in TRL):
--
--   KL_c = max(mean(pc - rc), 0),  KL_r = max(mean(pr - rr), 0)
--   l_c  = 1 - sigmoid(beta ((pc - rc) - KL_r))
--   l_r  = 1 - sigmoid(beta (KL_c - (pr - rr)))
--   loss = (l_c + l_r) / 2
--
-- TRL returned the 2B values [l_c ; l_r]; their mean equals the mean of the
-- per-pair average returned here. Default beta = 0.05, the DiscoPOP paper's
-- kto_pair recipe (config_full_kto.yaml); TRL's generic default was 0.1.
return {
  name = "kto_pair",
  params = { beta = 0.05 },
  loss = function(b, p)
    local dc = b.policy_chosen_logps - b.reference_chosen_logps
    local dr = b.policy_rejected_logps - b.reference_rejected_logps
    local kl_c = relu(mean(dc))
    local kl_r = relu(mean(dr))
    -- 1 - sigmoid(x) written as sigmoid(-x): no cancellation near 1
    local lc = sigmoid(-p.beta * (dc - kl_r))
    local lr = sigmoid(-p.beta * (kl_c - dr))
    return 0.5 * (lc + lr)
  end,
}
