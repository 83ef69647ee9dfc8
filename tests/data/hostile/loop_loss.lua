-- hostile: `while true do end` inside the loss
-- expect: instruction budget exhausted (limit hit: ...) at the marked line
return {
  name = "loop_loss",
  params = {},
  loss = function(b)
    while true do end -- REJECT HERE
  end,
}
