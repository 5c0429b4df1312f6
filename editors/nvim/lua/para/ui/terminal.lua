-- Agents in Neovim terminals: the answer to `para/runInTerminal`, and `:Para log`.
-- Commands are argv lists handed to jobstart: never a shell string.

local M = {}

local function para()
  return require("para")
end

-- session -> terminal buffer of its agent
M.buffers = {}

local function is_argv(v)
  if type(v) ~= "table" or #v == 0 then
    return false
  end
  for _, a in ipairs(v) do
    if type(a) ~= "string" then
      return false
    end
  end
  return true
end

-- open a window for a new terminal as configured; returns the buffer to run it in
local function place(where)
  local buf = vim.api.nvim_create_buf(true, false)
  if where == "hidden" then
    return buf, nil
  end
  local cmd = ({ tab = "tab split", split = "botright split", vsplit = "botright vsplit" })[where]
  vim.cmd(cmd)
  vim.api.nvim_win_set_buf(0, buf)
  return buf, vim.api.nvim_get_current_win()
end

-- start argv in buf as a terminal job; 0.11 has jobstart{term}, 0.10 termopen
local function start_job(buf, argv, opts)
  local job
  vim.api.nvim_buf_call(buf, function()
    if vim.fn.has("nvim-0.11") == 1 then
      job = vim.fn.jobstart(argv, vim.tbl_extend("force", opts, { term = true }))
    else
      job = vim.fn.termopen(argv, opts)
    end
  end)
  return job
end

--- Run an agent as the sidecar asks; returns `{ok = true, pid}` or `{ok = false}`.
---@param p para.RunInTerminal
---@param cfg para.Config
---@return table
function M.run(p, cfg)
  if type(p) ~= "table" or not is_argv(p.argv) or type(p.worktree) ~= "string" then
    para().notify("runInTerminal without a usable argv/worktree: refused", vim.log.levels.ERROR)
    return { ok = false }
  end
  if vim.fn.isdirectory(p.worktree) ~= 1 then
    para().notify("runInTerminal: no directory " .. p.worktree, vim.log.levels.ERROR)
    return { ok = false }
  end
  local env = {}
  for k, v in pairs(p.env or {}) do
    if type(k) == "string" and type(v) == "string" then
      env[k] = v
    end
  end
  local prev_win = vim.api.nvim_get_current_win()
  local ok, buf, win = pcall(place, cfg.terminal)
  if not ok then
    para().notify("cannot open a terminal: " .. tostring(buf), vim.log.levels.ERROR)
    return { ok = false }
  end
  local job = start_job(buf, p.argv, { cwd = p.worktree, env = env })
  if not job or job <= 0 then
    pcall(vim.api.nvim_buf_delete, buf, { force = true })
    para().notify("could not start the agent of " .. tostring(p.session), vim.log.levels.ERROR)
    return { ok = false }
  end
  pcall(vim.api.nvim_buf_set_name, buf, "para://agent/" .. tostring(p.session))
  vim.b[buf].para_session = p.session
  vim.b[buf].para_cwd = p.worktree
  vim.b[buf].term_title = p.title
  M.buffers[p.session] = buf
  if win and not cfg.terminal_focus and vim.api.nvim_win_is_valid(prev_win) then
    vim.api.nvim_set_current_win(prev_win)
  end
  para().fire("ParaTerminal", { session = p.session, buf = buf, job = job })
  return { ok = true, pid = vim.fn.jobpid(job) }
end

--- `para/stopTerminal`: the sidecar stopped the agent of `session` (`para stop`); its
--- terminal job is ended too (the buffer stays, to read what it printed).
---@param session string
function M.stopped(session)
  local buf = M.buffers[session]
  if not buf or not vim.api.nvim_buf_is_valid(buf) then
    return
  end
  local job = vim.b[buf].terminal_job_id
  if job then
    pcall(vim.fn.jobstop, job)
  end
  M.buffers[session] = nil
  para().notify("the agent of " .. session .. " was stopped")
end

--- `:Para log`: the agent's output. An editor terminal is shown again; a headless agent's
--- log is followed in a terminal (`tail -F`); a tmux agent is named.
---@param st para.SessionStatus?
function M.follow(st)
  if not st then
    return para().notify("no such session", vim.log.levels.ERROR)
  end
  local a = st.agent
  if not a then
    return para().notify(st.name .. " has no agent", vim.log.levels.WARN)
  end
  local buf = M.buffers[st.name]
  if buf and vim.api.nvim_buf_is_valid(buf) then
    local win = vim.fn.bufwinid(buf)
    if win ~= -1 then
      vim.api.nvim_set_current_win(win)
    else
      vim.cmd("tab sbuffer " .. buf)
    end
    return
  end
  if a.log then
    vim.cmd("tab split")
    local lbuf = vim.api.nvim_create_buf(true, false)
    vim.api.nvim_win_set_buf(0, lbuf)
    start_job(lbuf, { "tail", "-n", "+1", "-F", a.log }, {})
    vim.b[lbuf].para_session = st.name
    return
  end
  if a.window then
    return para().notify(st.name .. " runs in tmux window " .. a.window .. ": para attach " .. st.name)
  end
  para().notify(st.name .. "'s agent ran in " .. a.mode .. " mode; no output to follow", vim.log.levels.WARN)
end

return M
