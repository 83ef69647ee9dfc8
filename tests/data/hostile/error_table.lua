-- hostile: an error object that is a table
-- expect: error called with a table value
return {
  name = "error_table",
  params = {},
  loss = function(b)
    error({ code = 1, message = setmetatable }) -- REJECT HERE
  end,
}
