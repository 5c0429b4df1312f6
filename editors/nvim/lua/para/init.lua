-- para for Neovim: the public API and the one object that owns the plugin's state
-- (the connection, what is known of each repository's sessions). Nothing connects until
-- the first command or request.

local P = require("para.protocol")
local config = require("para.config")

local M = {}

---@class para.RepoState
---@field list table? last `para/list` answer
---@field status table? last `para/status` answer (all sessions)
---@field conflicts table? last `para/conflicts` answer
---@field conflicts_at number? when it was asked (vim.uv.now(), ms)

---@class para.State
---@field conn para.Connection?
---@field repos table<string, para.RepoState>
---@field last_repo string?
local state = { conn = nil, repos = {}, last_repo = nil }
M._state = state

local function fire(pattern, data)
  vim.api.nvim_exec_autocmds("User", { pattern = pattern, data = data, modeline = false })
end

---@param err para.ResponseError|table|string
---@return string
function M.message(err)
  if type(err) == "table" then
    return err.message or vim.inspect(err)
  end
  return tostring(err)
end

---@param msg string
---@param level integer?
function M.notify(msg, level)
  vim.notify("para: " .. msg, level or vim.log.levels.INFO, { title = "para" })
end

local function on_event(ev)
  fire("ParaEvent", ev)
  local kinds = config.options.notify
  if not kinds[ev.kind] then
    return
  end
  local d = ev.data or {}
  local who = ev.session or "?"
  if ev.kind == "conflicted" then
    M.notify(
      string.format(
        "%s conflicts with %s in %s (:Para conflicts, :Para continue, :Para abort)",
        who,
        tostring(d.target),
        table.concat(d.files or {}, ", ")
      ),
      vim.log.levels.WARN
    )
  elseif ev.kind == "integrated" then
    M.notify(string.format("%s integrated into %s", who, tostring(d.target)))
  elseif ev.kind == "integration_failed" then
    M.notify(string.format("%s did not land: %s", who, tostring(d.message)), vim.log.levels.WARN)
  elseif ev.kind == "agent_exited" then
    local how = d.lost and "was lost" or ("exited " .. tostring(d.exit_code))
    M.notify(string.format("agent of %s %s (%s)", who, how, tostring(d.status)))
  else
    M.notify(string.format("%s: %s", who, ev.kind))
  end
end

local handlers = {
  notification = function(method, params)
    if method == P.notifications.sessions_changed then
      fire("ParaSessionsChanged", params)
      require("para.ui.sessions").changed(params.repo)
    elseif method == P.notifications.event then
      on_event(params)
    elseif method == P.notifications.open_worktree then -- `para open NAME` from a shell
      require("para.ui.views").open({ name = params.session, worktree = params.worktree, worktree_exists = true })
      vim.cmd.edit(vim.fn.fnameescape(params.worktree)) -- the directory: netrw or the user's explorer
    elseif method == P.notifications.stop_terminal then
      require("para.ui.terminal").stopped(params.session)
    end
  end,
  server_request = function(method, params)
    if method == P.server_requests.run_in_terminal then
      return require("para.ui.terminal").run(params, config.options), nil
    end
    return nil, { code = -32601, message = "para.nvim does not handle " .. tostring(method) }
  end,
}

--- The connection (created, not connected, on first call).
---@return para.Connection
function M.connection()
  if not state.conn then
    state.conn = require("para.client").new(config.options, handlers)
    state.conn.on_ready = function()
      require("para.ui.sessions").changed(nil)
    end
    state.conn.on_lost = function(conn, code)
      M.notify(string.format("para lsp exited (code %d); reconnecting", code), vim.log.levels.WARN)
      -- views and agent terminals need the subscription back; a failing sidecar is left alone
      if conn.failures < 3 then
        conn:ensure(function(err)
          if err then
            M.notify("reconnecting failed: " .. M.message(err), vim.log.levels.ERROR)
          end
        end)
      end
    end
    vim.api.nvim_create_autocmd("VimLeavePre", {
      group = vim.api.nvim_create_augroup("para_leave", { clear = true }),
      callback = function()
        if state.conn then
          state.conn:terminate()
        end
      end,
    })
  end
  return state.conn
end

--- Set options (optional; `:Para` works without it).
---@param opts para.Config|table|nil
function M.setup(opts)
  config.setup(opts)
  if state.conn then
    state.conn.cfg = config.options
  end
end

--- The directory and session a command is about: the session of the current buffer's
--- worktree (an agent terminal or a sessions-buffer line name it), else the buffer's directory.
---@return { cwd: string, session: string? }
function M.context()
  local buf = vim.api.nvim_get_current_buf()
  local b = vim.b[buf]
  if b.para_cwd then
    local session = b.para_session
    if vim.bo[buf].filetype == "para" then
      session = require("para.ui.sessions").session_at_cursor()
    end
    return { cwd = b.para_cwd, session = session }
  end
  local name = vim.api.nvim_buf_get_name(buf)
  if name ~= "" and vim.bo[buf].buftype == "" then
    local dir = vim.fs.dirname(vim.fn.fnamemodify(name, ":p"))
    if dir and vim.fn.isdirectory(dir) == 1 then
      return { cwd = dir }
    end
  end
  return { cwd = vim.fn.getcwd() }
end

--- One request to the sidecar. `verb` is a key of `protocol.methods` (`"start"`, `"list"`, …);
--- `cwd` defaults to the current context's.
---@param verb string
---@param params table?
---@param cb fun(err: para.ResponseError?, result: any)?
function M.request(verb, params, cb)
  local method = P.methods[verb]
  if not method then
    error("para: unknown request " .. tostring(verb), 2)
  end
  params = params or {}
  if params.cwd == nil and verb ~= "hello" and verb ~= "config" then
    params.cwd = M.context().cwd
  end
  M.connection():request(method, params, function(err, result)
    if not err and type(result) == "table" and result.repo then
      state.last_repo = result.repo
    end
    if cb then
      cb(err, result)
    end
  end)
end

--- The same, waiting for the answer (for completion and scripts): returns `err, result`.
---@param verb string
---@param params table?
---@param timeout_ms integer?
---@return para.ResponseError?, any
function M.request_sync(verb, params, timeout_ms)
  local done, e, r = false, nil, nil
  M.request(verb, params, function(err, result)
    done, e, r = true, err, result
  end)
  if not vim.wait(timeout_ms or 5000, function()
    return done
  end, 10) then
    return require("para.client").error("sidecar_unavailable", "no answer in time"), nil
  end
  return e, r
end

---@param repo string
---@return para.RepoState
function M.repo_state(repo)
  state.repos[repo] = state.repos[repo] or {}
  return state.repos[repo]
end

--- For your statusline: running agents and conflicted sessions of the repository seen last,
--- from what the plugin already knows (never a request). `""` when there is nothing to say.
---@return string
function M.statusline()
  local rs = state.last_repo and state.repos[state.last_repo]
  if not rs then
    return ""
  end
  local running, conflicted = 0, 0
  for _, s in ipairs(rs.status and rs.status.sessions or {}) do
    if s.agent and s.agent.state == "running" then
      running = running + 1
    end
  end
  for _, s in ipairs(rs.list and rs.list.sessions or {}) do
    if s.status == "conflicted" then
      conflicted = conflicted + 1
    end
  end
  local parts = {}
  if running > 0 then
    table.insert(parts, running .. " running")
  end
  if conflicted > 0 then
    table.insert(parts, conflicted .. " conflicted")
  end
  if #parts == 0 then
    return ""
  end
  return "para: " .. table.concat(parts, ", ")
end

--- Run a `:Para` subcommand line (what the user command calls).
---@param args string[]
function M.command(args)
  require("para.commands").run(args)
end

M.fire = fire
return M
