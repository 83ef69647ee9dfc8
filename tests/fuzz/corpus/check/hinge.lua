-- losses/hinge.lua — SLiC hinge loss on the DPO log-ratio.
--
-- Sources: Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with
-- Human Feedback" (calibration loss, here with margin 1/beta and the reference
-- log-ratio subtracted as in TRL); TRL DPOTrainer loss_type="hinge".
--
--   z    = (pc - pr) - (rc - rr)
--   loss = relu(1 - beta z)
return {
  name = "hinge",
  params = { beta = 0.1 },
  loss = function(b, p)
    local z = (b.policy_chosen_logps - b.policy_rejected_logps)
            - (b.reference_chosen_logps - b.reference_rejected_logps)
    return relu(1 - p.beta * z)
  end,
}
