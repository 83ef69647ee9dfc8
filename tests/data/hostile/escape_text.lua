-- hostile text: a name with an OSC title sequence, a newline that would
-- forge a verdict line and a byte that is not UTF-8; an error message with a
-- CSI clear-screen and another bad byte
return { name = "x\27]0;pwned\7\nprefrun: valid \255", params = { beta = 0.1 },
  loss = function(b, p) error("bad \255 byte \27[2J") end }
