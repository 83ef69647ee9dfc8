-- hostile: spins until the wall clock runs out (the test gives it an
-- instruction budget it cannot exhaust first)
-- expect: time budget exhausted (limit hit: ... wall clock ...)
return {
  name = "wall_clock",
  params = {},
  loss = function(b)
    local x = 0
    while true do x = x + 1 end -- REJECT HERE
  end,
}
