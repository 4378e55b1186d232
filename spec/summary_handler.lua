-- Busted output handler for agt's specs: busted's plain terminal output, then one line
-- "N passed, N failed" (errors count as failures; pending specs are listed, not passed).
return function(options)
  local busted = require("busted")
  local handler = require("busted.outputHandlers.plainTerminal")(options)
  busted.subscribe({ "suite", "end" }, function()
    local failed = handler.failuresCount + handler.errorsCount
    io.write(string.format("\n%d passed, %d failed (busted; %d pending)\n",
                           handler.successesCount, failed, handler.pendingsCount))
    io.flush()
    return nil, true
  end)
  return handler
end
