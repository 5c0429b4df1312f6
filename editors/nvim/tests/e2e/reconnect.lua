-- The sidecar goes away under an open sessions buffer: the plugin reconnects through a new
-- `para lsp` (which starts a sidecar), subscribes again, and the buffer follows changes again.
local H = dofile(os.getenv("PARA_NVIM_TESTS") .. "/e2e/helpers.lua")
require("para").setup({})
vim.cmd.cd(H.repo)
H.ok("start rc-one")
local drawn = H.expect("ParaSessionsDrawn", nil, function()
  vim.cmd("Para list")
end)
local buf = drawn.buf
local first = require("para")._state.conn.hello.pid
H.out("first_pid", first)

local msgs = {}
local notify = vim.notify
vim.notify = function(m, level)
  table.insert(msgs, { m = m, level = level })
  notify(m, level)
end
-- the reconnection redraws the buffer once it is subscribed again
H.expect("ParaSessionsDrawn", function()
  local c = require("para")._state.conn
  return c.state == "ready" and c.hello.pid ~= first
end, function()
  H.cli({ "sidecar", "stop" })
end, "a redraw after reconnecting")
vim.notify = notify
H.out("second_pid", require("para")._state.conn.hello.pid)
H.out("notified", msgs)

H.expect("ParaSessionsDrawn", function()
  return H.lines(buf):find("rc-two", 1, true) ~= nil
end, function()
  H.cli({ "start", "rc-two" })
end, "a change after reconnecting")
H.out("buffer", vim.api.nvim_buf_get_lines(buf, 0, -1, false))
H.done()
