-- hostile: an infinite loop while the file is loaded (before any loss call)
-- expect: instruction budget exhausted (limit hit: ...) at the marked line
while true do end -- REJECT HERE
