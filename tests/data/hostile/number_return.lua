-- hostile: a number instead of a tensor
-- expect: loss returned number
return {
  name = "number_return",
  params = {},
  loss = function(b) -- REJECT HERE
    return 0.5
  end,
}
