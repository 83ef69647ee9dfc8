-- hostile: a table that grows without end
-- expect: Lua heap exhausted (limit hit: ... Lua heap ...)
return {
  name = "mem_table",
  params = {},
  loss = function(b)
    local t, i = {}, 0
    while true do
      i = i + 1
      t[i] = { i, i } -- REJECT HERE
    end
  end,
}
