-- tests/data/loss/lib/dpo.lua — DPO as a library file for use("dpo") in the
-- tests (the lib dir given to loss_load there is tests/data/loss/lib).
return {
  name = "dpo",
  params = { beta = 0.1 },
  loss = function(b, p)
    local logits = (b.policy_chosen_logps - b.policy_rejected_logps)
                 - (b.reference_chosen_logps - b.reference_rejected_logps)
    return -logsigmoid(p.beta * logits)
  end,
}
