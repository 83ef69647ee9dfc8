-- hostile: assert with a table as its message
-- expect: assertion failed! (its message is a table, not a string)
return {
  name = "assert_table",
  params = {},
  loss = function(b)
    assert(false, {}) -- REJECT HERE
  end,
}
