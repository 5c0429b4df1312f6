-- The rest of the workflow: a prompt asked with vim.ui.input, a headless agent's log followed,
-- the sessions buffer's keys, the conflict forecast, finish with an asked message, the
-- ParaSessionsChanged autocmd, and a runInTerminal request the plugin must refuse.
local H = dofile(os.getenv("PARA_NVIM_TESTS") .. "/e2e/helpers.lua")
require("para").setup({ conflicts_interval = 0 })
vim.cmd.cd(H.repo)

local changes = {}
vim.api.nvim_create_autocmd("User", {
  pattern = "ParaSessionsChanged",
  callback = function(ev)
    table.insert(changes, ev.data)
  end,
})

-- what a UI plugin would answer to vim.ui.input
local answers, replies = {}, {}
vim.ui.input = function(opts, cb)
  table.insert(answers, opts.prompt)
  cb(table.remove(replies, 1))
end

-- dispatch with the prompt asked for; the agent runs headless, its log is followed
replies = { "```file:wf.txt\nfrom the prompt\n```\n```agent\nstatus done writing\n```\n" }
local exited = H.expect("ParaEvent", function(ev)
  return ev.session == "wf-agent" and ev.kind == "agent_exited"
end, function()
  H.ok("dispatch wf-agent --agent scripted --mode headless")
end, "the headless agent to exit")
H.out("asked", answers)
H.out("headless_exit", exited.data)
H.ok("log wf-agent")
local logbuf = vim.api.nvim_get_current_buf()
H.wait("the log in a terminal", function()
  return H.lines(logbuf):find("[scripted agent]", 1, true) ~= nil
end)
H.out("log", { buftype = vim.bo[logbuf].buftype, argv = vim.api.nvim_get_chan_info(vim.bo[logbuf].channel).argv })
vim.cmd("tabonly")

-- two sessions that collide: the forecast goes into quickfix
local a = H.ok("start wf-a")
local b = H.ok("start wf-b")
vim.fn.writefile({ "a side" }, a.worktree .. "/same.txt")
vim.fn.writefile({ "b side" }, b.worktree .. "/same.txt")
H.ok("conflicts")
local qf = vim.fn.getqflist({ title = 1, items = 1 })
H.out("forecast", {
  title = qf.title,
  items = vim.tbl_map(function(i)
    return { file = vim.api.nvim_buf_get_name(i.bufnr), text = i.text }
  end, qf.items),
})
vim.cmd("cclose")

-- the sessions buffer's keys act on the line's session
local drawn = H.expect("ParaSessionsDrawn", nil, function()
  vim.cmd("Para list")
end)
local function goto_line(name)
  for lnum, line in ipairs(vim.api.nvim_buf_get_lines(drawn.buf, 0, -1, false)) do
    if vim.startswith(line, name .. " ") then
      vim.api.nvim_win_set_cursor(0, { lnum, 0 })
      return
    end
  end
  error(name .. " not in the buffer: " .. H.lines(drawn.buf))
end
H.wait("the collisions column", function()
  return H.lines(drawn.buf):find("wf-b (1)", 1, true) ~= nil
end)
H.out("collides", vim.api.nvim_buf_get_lines(drawn.buf, 0, -1, false))
goto_line("wf-b")
local cancelled = H.expect("ParaCommandDone", function(d)
  return d.command == "cancel"
end, function()
  vim.api.nvim_feedkeys("x", "x", false)
end)
H.out("key_x", { ok = cancelled.ok, name = cancelled.result.name, status = cancelled.result.status })
H.wait("wf-b gone from the buffer", function()
  return H.lines(drawn.buf):find("wf-b ", 1, true) == nil
end)
goto_line("wf-a")
local landed = H.expect("ParaCommandDone", function(d)
  return d.command == "integrate"
end, function()
  vim.api.nvim_feedkeys("i", "x", false)
end)
H.out("key_i", { ok = landed.ok, name = landed.result.name, status = landed.result.status })

-- finish asks for its message
local f = H.ok("start wf-fin")
vim.fn.writefile({ "finished" }, f.worktree .. "/fin.txt")
vim.cmd.edit(vim.fn.fnameescape(f.worktree .. "/fin.txt"))
replies = { "fin: from the prompt" }
local fin = H.ok("finish")
H.out("finish", { name = fin.name, status = fin.status })
H.out("asked_all", answers)

-- a runInTerminal the plugin must refuse: no argv, a string instead of a list, a missing directory
local term = require("para.ui.terminal")
local cfg = require("para.config").options
H.out("refused_run", {
  term.run({ session = "x", worktree = H.repo, argv = {} }, cfg),
  term.run({ session = "x", worktree = H.repo, argv = "rm -rf /" }, cfg),
  term.run({ session = "x", worktree = H.repo .. "/nope", argv = { "true" } }, cfg),
})

local kinds = {}
for _, c in ipairs(changes) do
  table.insert(kinds, c.kind .. ":" .. table.concat(c.sessions, ","))
end
H.out("changes", kinds)
H.done()
