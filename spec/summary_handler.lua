-- Busted output handler for agt's specs: busted's plain terminal output, then one line
-- "N passed, N failed" (errors count as failures; pending specs are listed, not passed). The
-- GPU specs that are pending for want of a device are listed as one line, with their count.
return function(options)
  local busted = require("busted")
  local handler = require("busted.outputHandlers.plainTerminal")(options)
  -- runs before the handler's own end of suite (priority 1), which lists the pendings
  busted.subscribe({ "suite", "end" }, function()
    local kept, gpu, why = {}, nil, nil
    for _, p in pairs(handler.pendings) do
      -- gpu_spec says "(no GPU: why)", backend_spec "(cuda: why)"
      local reason = type(p.name) == "string" and (p.name:match("%(no GPU: (.*)%)$") or p.name:match("%(cuda: (.*)%)$"))
      if reason then
        gpu = gpu or p
        gpu.count = (gpu.count or 0) + 1
        why = reason
      else
        kept[#kept + 1] = p
      end
    end
    if gpu then
      gpu.name = string.format("%d GPU spec(s): no GPU: %s", gpu.count, (why:gsub("^[%w_]+%.cu:%d+: ", "")))
      kept[#kept + 1] = gpu
    end
    handler.pendings = kept
    return nil, true
  end, { priority = 1 })
  busted.subscribe({ "suite", "end" }, function()
    local failed = handler.failuresCount + handler.errorsCount
    -- one short line per failure, which make test's last lines repeat (a CI log may keep only its tail)
    for _, list in ipairs({ handler.failures, handler.errors }) do
      for _, f in pairs(list) do
        local t = f.element and f.element.trace
        local where = t and t.short_src and (t.short_src .. ":" .. tostring(t.currentline)) or "?"
        local msg = tostring(f.message or ""):gsub("%s+", " ")
        io.write(string.format("\nFAILED: %s %s: %s", where, tostring(f.name), msg:sub(1, 160)))
      end
    end
    io.write(string.format("\n%d passed, %d failed (busted; %d pending)\n",
                           handler.successesCount, failed, handler.pendingsCount))
    io.flush()
    return nil, true
  end)
  return handler
end
