-- A scripted agent dispatched in editor mode runs in a Neovim terminal and its session
-- reaches review; :Para log shows that terminal again.
local H = dofile(os.getenv("PARA_NVIM_TESTS") .. "/e2e/helpers.lua")
require("para").setup({ terminal = "tab" })
vim.cmd.cd(H.repo)
local task = H.repo .. "/nv-task.md"
vim.fn.writefile({
  "Write the greeting.",
  "```file:hello.txt",
  "hello from a neovim terminal",
  "```",
  "```agent",
  "status writing hello",
  "```",
  'When done: para finish "add hello"',
}, task)

local tabs = #vim.api.nvim_list_tabpages()
local term
local finished = H.expect("ParaEvent", function(ev)
  return ev.session == "nv-agent" and ev.kind == "agent_exited"
end, function()
  term = H.expect("ParaTerminal", nil, function()
    local d = H.para("dispatch nv-agent -f " .. task .. " --agent scripted --mode editor")
    assert(d.ok, vim.inspect(d.error))
    H.out("dispatched", d.result)
  end)
end, "the agent to exit")
H.out("agent_exited", finished)
H.out("terminal", {
  buftype = vim.bo[term.buf].buftype,
  session = vim.b[term.buf].para_session,
  argv = vim.api.nvim_get_chan_info(term.job).argv,
  tabs = #vim.api.nvim_list_tabpages() - tabs,
  focus_kept = vim.api.nvim_get_current_buf() ~= term.buf,
})
H.wait("the agent's output", function()
  return H.lines(term.buf):find("[scripted agent]", 1, true) ~= nil
end)
H.out("output", H.lines(term.buf))
H.ok("log nv-agent")
H.out("log_buf_is_terminal", vim.api.nvim_get_current_buf() == term.buf)
H.done()
