-- losses/sigmoid.lua — TRL DPOTrainer loss_type="sigmoid", current semantics.
--
-- Source: TRL (huggingface/trl) DPOTrainer._compute_loss, loss_type "sigmoid";
-- the DPO loss of Rafailov et al. 2023, eq. 7.
--
--   z    = (pc - pr) - (rc - rr)
--   loss = -log sigmoid(beta z)
--
-- Current TRL has no label smoothing here (it was removed from "sigmoid"; the
-- older cDPO form -(1-eps) log sig(beta z) - eps log sig(-beta z) lives on as
-- dpo.lua's label_smoothing parameter). This file is dpo.lua with eps = 0 and
-- is written through use("dpo") to keep one definition of the formula.
return {
  name = "sigmoid",
  params = { beta = 0.1 },
  loss = function(b, p, s)
    return use("dpo").loss(b, { beta = p.beta, label_smoothing = 0 }, s)
  end,
}
