-- :Para start/list/show/open/diff/cancel, live refresh from the CLI, completion,
-- errors, statusline, :checkhealth para and :help.
local H = dofile(os.getenv("PARA_NVIM_TESTS") .. "/e2e/helpers.lua")
require("para").setup({ conflicts_interval = 0 })
assert(require("para")._state.conn == nil, "setup must not connect")
vim.cmd.cd(H.repo)

local started = H.ok("start nv-own")
H.out("started", started)
local listed = vim.json.decode(H.cli({ "list", "--json" }))
H.out("cli_list", listed)

-- the sessions buffer, then a change made by the CLI in another process
local drawn = H.expect("ParaSessionsDrawn", nil, function()
  vim.cmd("Para list")
end)
local buf = drawn.buf
assert(vim.bo[buf].filetype == "para", "filetype " .. vim.bo[buf].filetype)
assert(H.lines(buf):find("nv-own", 1, true), H.lines(buf))

local function now()
  local sec, usec = vim.uv.gettimeofday()
  return sec + usec / 1e6
end
local cli_done, cli_start, event_ts
local ev_id = vim.api.nvim_create_autocmd("User", {
  pattern = "ParaEvent",
  callback = function(ev)
    if ev.data.session == "nv-cli" and ev.data.kind == "started" then
      event_ts = ev.data.ts
    end
  end,
})
cli_start = now()
local seen = H.expect("ParaSessionsDrawn", function()
  return H.lines(buf):find("nv-cli", 1, true) ~= nil
end, function()
  vim.system({ "para", "start", "nv-cli" }, { cwd = H.repo }, function(r)
    cli_done = { code = r.code }
  end)
end, "the CLI's session in the sessions buffer")
local shown_at = now()
vim.api.nvim_del_autocmd(ev_id)
H.wait("the CLI to exit", function()
  return cli_done ~= nil
end)
assert(cli_done.code == 0, "para start nv-cli failed")
-- from the sidecar recording the change, and from launching the CLI (its start-up included)
H.out("event_to_buffer_ms", (shown_at - assert(event_ts, "no started event")) * 1000)
H.out("cli_to_buffer_ms", (shown_at - cli_start) * 1000)
H.out("buffer", vim.api.nvim_buf_get_lines(seen.buf, 0, -1, false))

-- completion of subcommands and of session names (from the sidecar)
H.out("complete_sub", vim.fn.getcompletion("Para st", "cmdline"))
H.out("complete_session", vim.fn.getcompletion("Para show nv-", "cmdline"))

-- show, diff and open act on a session; a file of its worktree names it
vim.fn.writefile({ "made in neovim" }, started.worktree .. "/nv.txt")
vim.cmd.edit(vim.fn.fnameescape(started.worktree .. "/nv.txt"))
local ctx = require("para").context()
H.out("context", ctx)
H.ok("diff")
H.out("diff", { name = vim.api.nvim_buf_get_name(0), ft = vim.bo.filetype, text = H.lines(0) })
H.ok("open nv-own")
H.out("tab_cwd", vim.fn.getcwd(-1, 0))
vim.cmd("tabonly")

-- errors: a para error, an unknown subcommand, a bad option (no traceback, nothing done)
local missing = H.para("show nope")
H.out("show_nope", { ok = missing.ok, code = missing.error.data.code, message = missing.error.message })
local msgs = {}
local notify = vim.notify
vim.notify = function(m, level)
  table.insert(msgs, { m = m, level = level })
end
vim.cmd("Para bogus")
vim.cmd("Para start --nope")
vim.notify = notify
H.out("refused", msgs)

H.ok("cancel nv-cli")
H.out("statusline", require("para").statusline())

-- :checkhealth para
vim.cmd("checkhealth para")
H.out("health", H.lines(0))
vim.cmd("tabonly")

-- help: tags build without errors, every documented tag opens
local doc = assert(os.getenv("PARA_DOC"))
vim.v.errmsg = ""
vim.cmd("helptags " .. vim.fn.fnameescape(doc))
H.out("helptags_err", vim.v.errmsg)
local tags = {}
for _, tag in ipairs({ "para", ":Para", "para-setup", "para-events", "para-health", "para-api", "para-executors" }) do
  vim.cmd("help " .. tag)
  tags[tag] = vim.fs.basename(vim.api.nvim_buf_get_name(0))
  vim.cmd("helpclose")
end
H.out("help", tags)
H.done()
