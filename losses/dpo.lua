-- losses/dpo.lua — Direct Preference Optimization, with conservative label
-- smoothing (cDPO).
--
-- Sources: Rafailov et al. 2023, "Direct Preference Optimization: Your Language
-- Model is Secretly a Reward Model", eq. 7; label smoothing from Mitchell 2023,
-- "A note on DPO with noisy preferences & relationship to IPO" (cDPO). This is
-- also the OLDER form of TRL DPOTrainer loss_type="sigmoid", which carried the
-- label_smoothing term; current TRL's "sigmoid" dropped it (see sigmoid.lua)
-- and keeps label smoothing only in "robust", "exo_pair" and "aot".
--
--   z   = (pc - pr) - (rc - rr)          pc = policy_chosen_logps, rc = reference_...
--   loss = -(1 - eps) * log sigmoid(beta z) - eps * log sigmoid(-beta z)
--
-- eps = label_smoothing = 0 gives plain DPO. logsigmoid is the stable form, so
-- the loss stays finite (linear growth) for any |beta z|.
return {
  name = "dpo",
  params = { beta = 0.1, label_smoothing = 0.0 },
  loss = function(b, p)
    local z = (b.policy_chosen_logps - b.policy_rejected_logps)
            - (b.reference_chosen_logps - b.reference_rejected_logps)
    local rho = p.beta * z
    local eps = p.label_smoothing
    if eps == 0 then
      return -logsigmoid(rho)
    end
    return -(1 - eps) * logsigmoid(rho) - eps * logsigmoid(-rho)
  end,
}
