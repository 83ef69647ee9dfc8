-- tests/data/loss/dpo.lua — DPO (Rafailov et al. 2023), a test fixture for
-- the sandbox, checker and CLI tests (the library's own copy is losses/dpo.lua).
return {
  name = "dpo",
  params = { beta = 0.1 },
  loss = function(b, p)
    local logits = (b.policy_chosen_logps - b.policy_rejected_logps)
                 - (b.reference_chosen_logps - b.reference_rejected_logps)
    return -logsigmoid(p.beta * logits)
  end,
}
