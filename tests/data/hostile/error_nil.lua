-- hostile: error() without a message
-- expect: error called with a nil value
return {
  name = "error_nil",
  params = {},
  loss = function(b)
    error() -- REJECT HERE
  end,
}
