-- The sessions buffer (filetype `para`): one line per session, redrawn on
-- `para/sessionsChanged` (no polling). `render` is pure and unit-tested.

local M = {}

local NS = vim.api.nvim_create_namespace("para_sessions")

-- open sessions buffers: bufnr -> repository (nil until the first answer)
local buffers = {}

local function para()
  return require("para")
end

local function width(s)
  return vim.fn.strdisplaywidth(s)
end

local function pad(s, w)
  return s .. string.rep(" ", w - width(s))
end

local function short(s, n)
  s = (s or ""):gsub("%s+", " ")
  if vim.fn.strchars(s) > n then
    return vim.fn.strcharpart(s, 0, n - 1) .. "…"
  end
  return s
end

--- What each session collides with, from a `para/conflicts` answer.
---@param forecast table?
---@return table<string, string[]>
function M.collisions(forecast)
  local out = {}
  local function add(name, what)
    out[name] = out[name] or {}
    table.insert(out[name], what)
  end
  for _, s in ipairs(forecast and forecast.sessions or {}) do
    if s.unrelated then
      add(s.session, "unrelated to " .. tostring(s.target))
    elseif s.files and #s.files > 0 then
      add(s.session, string.format("%s (%d)", tostring(s.target), #s.files))
    end
  end
  for _, p in ipairs(forecast and forecast.pairs or {}) do
    add(p.a, string.format("%s (%d)", p.b, #(p.files or {})))
    add(p.b, string.format("%s (%d)", p.a, #(p.files or {})))
  end
  return out
end

-- a JSON null (vim.NIL from the wire) as nil
local function val(x)
  if x == vim.NIL then
    return nil
  end
  return x
end

--- How long ago `ts` (seconds since the epoch) was, as the CLI says it: 12s, 4m, 2h, 3d.
---@param ts number
---@param now number? (default: os.time())
---@return string
function M.ago(ts, now)
  local d = math.max(0, math.floor((now or os.time()) - ts))
  for _, u in ipairs({ { "d", 86400 }, { "h", 3600 }, { "m", 60 } }) do
    if d >= u[2] then
      return math.floor(d / u[2]) .. u[1]
    end
  end
  return d .. "s"
end

--- An agent placed on another machine by an executor (issue 16); a local one shows nothing extra.
---@param a table? an AgentEvidence (para/status) or AgentRun (para/show)
---@return boolean
function M.remote(a)
  a = val(a)
  return a ~= nil and (val(a.executor) or "local") ~= "local"
end

--- "runs on h1 (build1.lan)", "ran on" once it ended: the words of `para status`.
---@param a table
---@return string
function M.runs_on(a)
  local state = val(a.state)
  local ended = (state ~= nil and state ~= "running")
    or val(a.exit_code) ~= nil
    or val(a.lost) == true
    or val(a.stopped_at) ~= nil
  local host = val(a.host) or (type(val(a.placement)) == "table" and val(a.placement.host)) or nil
  return (ended and "ran" or "runs") .. " on " .. tostring(a.executor) .. (host and (" (" .. host .. ")") or "")
end

--- "last harvest 12s ago (3f2a9c1d0e)", or "never harvested" (its work is on the host only).
---@param a table
---@param now number?
---@return string
function M.harvest(a, now)
  local at, sha = val(a.harvested_at), val(a.harvested_commit)
  if not at then
    return "never harvested"
  end
  return "last harvest " .. M.ago(at, now) .. " ago" .. (sha and (" (" .. sha:sub(1, 10) .. ")") or "")
end

--- The agent column: state and mode, or "" without an agent; an agent on another host adds
--- `@h1` and the age of its last harvest (or `never harvested`).
---@param st para.SessionStatus?
---@param now number?
---@return string
local function agent_cell(st, now)
  local a = st and val(st.agent)
  if not a then
    return ""
  end
  local s = a.state .. "/" .. a.mode
  if a.state ~= "running" and val(a.exit_code) ~= nil then
    s = s .. " " .. tostring(a.exit_code)
  end
  if M.remote(a) then
    local at = val(a.harvested_at)
    s = s .. " @" .. a.executor .. " (" .. (at and ("harvest " .. M.ago(at, now) .. " ago") or "never harvested") .. ")"
  end
  return s
end

local function report_cell(st)
  local r = st and st.report
  if not r then
    return ""
  end
  local s = r.task or ""
  if r.todos_total then
    s = string.format("%s [%d/%d]", s, r.todos_done or 0, r.todos_total)
  end
  if r.tests and r.tests ~= "unknown" then
    s = s .. " tests " .. r.tests
  end
  if r.blocked then
    s = s .. " BLOCKED: " .. r.blocked
  end
  return s
end

--- Lines of the sessions buffer, and which session each line shows.
---@param list table a `para/list` answer
---@param status table? a `para/status` answer (`all = true`)
---@param forecast table? a `para/conflicts` answer
---@param now number? the time the ages are counted from (default: os.time())
---@return string[] lines, table<integer, string> names (line number -> session)
function M.render(list, status, forecast, now)
  local by_name = {}
  for _, s in ipairs(status and status.sessions or {}) do
    by_name[s.name] = s
  end
  local hits = M.collisions(forecast)
  -- The PORTS column (session.ports) only when some session has ports.
  local with_ports = false
  for _, s in ipairs(list.sessions or {}) do
    with_ports = with_ports or (s.ports ~= nil and #s.ports > 0)
  end
  local rows = { { "SESSION", "STATE", "AGENT", "AHEAD", "COLLIDES", "REPORT" } }
  if with_ports then
    table.insert(rows[1], 3, "PORTS")
  end
  for _, s in ipairs(list.sessions or {}) do
    local st = by_name[s.name]
    local ahead = st and st.ahead
    local row = {
      (s.current and "*" or "") .. s.name,
      s.state or s.status,
      agent_cell(st, now),
      ahead ~= nil and tostring(ahead) or "",
      table.concat(hits[s.name] or {}, ", "),
      short(report_cell(st), 60),
    }
    if with_ports then
      local ports = {}
      for _, p in ipairs(s.ports or {}) do
        table.insert(ports, tostring(p))
      end
      table.insert(row, 3, table.concat(ports, " "))
    end
    table.insert(rows, row)
  end
  local widths = {}
  for _, row in ipairs(rows) do
    for i, cell in ipairs(row) do
      widths[i] = math.max(widths[i] or 0, width(cell))
    end
  end
  local lines, names = { "para: " .. (list.repo or "?") }, {}
  for r, row in ipairs(rows) do
    local cells = {}
    for i, cell in ipairs(row) do
      cells[i] = i < #row and pad(cell, widths[i]) or cell
    end
    table.insert(lines, (table.concat(cells, "  "):gsub("%s+$", "")))
    if r > 1 then
      names[#lines] = list.sessions[r - 1].name
    end
  end
  if #rows == 1 then
    table.insert(lines, "(no sessions: :Para start, :Para dispatch)")
  end
  table.insert(lines, "")
  table.insert(lines, "<CR> open  i integrate  x cancel  d diff  l log  r refresh  g? help")
  return lines, names
end

local KEYS = {
  { "<CR>", "open", "open the worktree in a new tab" },
  { "i", "integrate", "integrate the session" },
  { "x", "cancel", "cancel the session (work is saved; :Para recover)" },
  { "d", "diff", "the session's diff against its base" },
  { "l", "log", "follow the agent's output" },
}

--- The session of the line under the cursor in a sessions buffer.
---@return string?
function M.session_at_cursor()
  local buf = vim.api.nvim_get_current_buf()
  local names = vim.b[buf].para_names or {}
  return names[tostring(vim.api.nvim_win_get_cursor(0)[1])]
end

local function draw(buf, lines, names)
  if not vim.api.nvim_buf_is_valid(buf) then
    return
  end
  vim.bo[buf].modifiable = true
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].modifiable = false
  vim.bo[buf].modified = false
  local keyed = {}
  for lnum, name in pairs(names) do
    keyed[tostring(lnum)] = name
  end
  vim.b[buf].para_names = keyed
  vim.api.nvim_buf_clear_namespace(buf, NS, 0, -1)
  vim.api.nvim_buf_set_extmark(buf, NS, 0, 0, { end_col = #lines[1], hl_group = "Title" })
  if #lines > 1 then
    vim.api.nvim_buf_set_extmark(buf, NS, 1, 0, { end_col = #lines[2], hl_group = "Comment" })
  end
  for lnum, _ in pairs(names) do
    local line = lines[lnum]
    local hl = line:find("conflicted", 1, true) and "DiagnosticWarn"
      or (line:find("running/", 1, true) and "DiagnosticInfo")
    if hl then
      vim.api.nvim_buf_set_extmark(buf, NS, lnum - 1, 0, { end_col = #line, hl_group = hl })
    end
  end
end

--- Ask the sidecar and redraw `buf`. Changes arriving meanwhile cause one more round.
---@param buf integer
function M.refresh(buf)
  if not vim.api.nvim_buf_is_valid(buf) then
    return
  end
  local b = vim.b[buf]
  if b.para_refreshing then
    b.para_again = true
    return
  end
  b.para_refreshing = true
  local cwd = b.para_cwd
  local got, list, status, failed = 0, nil, nil, nil
  local rs
  local function finish()
    got = got + 1
    if got < 2 then
      return
    end
    if not vim.api.nvim_buf_is_valid(buf) then
      return
    end
    vim.b[buf].para_refreshing = false
    if failed then
      draw(buf, { "para: " .. failed, "", "r refresh" }, {})
    else
      rs = para().repo_state(list.repo)
      rs.list, rs.status = list, status
      local lines, names = M.render(list, status, rs.conflicts)
      draw(buf, lines, names)
      vim.b[buf].para_drawn = (vim.b[buf].para_drawn or 0) + 1
      para().fire("ParaSessionsDrawn", { buf = buf, repo = list.repo })
      M._forecast(buf, cwd, rs)
    end
    if vim.b[buf].para_again then
      vim.b[buf].para_again = false
      M.refresh(buf)
    end
  end
  para().request("list", { cwd = cwd }, function(err, r)
    if err then
      failed = para().message(err)
    else
      list = r
      buffers[buf] = r.repo
      vim.b[buf].para_repo = r.repo
    end
    finish()
  end)
  para().request("status", { cwd = cwd, all = true }, function(err, r)
    if not err then
      status = r
    end
    finish()
  end)
end

-- the conflict forecast snapshots every worktree: asked at most every `conflicts_interval`
function M._forecast(buf, cwd, rs)
  local interval = require("para.config").options.conflicts_interval * 1000
  local now = vim.uv.now()
  if rs.forecasting or (rs.conflicts_at and now - rs.conflicts_at < interval) then
    return
  end
  rs.forecasting = true
  rs.conflicts_at = now
  para().request("conflicts", { cwd = cwd }, function(err, r)
    rs.forecasting = false
    if err or not vim.api.nvim_buf_is_valid(buf) then
      return
    end
    local before = vim.inspect(M.collisions(rs.conflicts))
    rs.conflicts = r
    if vim.inspect(M.collisions(r)) ~= before then
      local lines, names = M.render(rs.list, rs.status, r)
      draw(buf, lines, names)
    end
  end)
end

--- A repository's sessions changed (nil: everything may have, after a reconnection).
---@param repo string?
function M.changed(repo)
  local shown = false
  for buf, r in pairs(buffers) do
    if not vim.api.nvim_buf_is_valid(buf) then
      buffers[buf] = nil
    elseif repo == nil or r == repo or r == "" then
      shown = shown or r == repo
      M.refresh(buf)
    end
  end
  if repo and not shown and para()._state.repos[repo] then
    -- keep the statusline's view fresh even with no sessions buffer open
    para().request("status", { cwd = repo, all = true }, function(err, r)
      if not err then
        para().repo_state(repo).status = r
      end
    end)
    para().request("list", { cwd = repo }, function(err, r)
      if not err then
        para().repo_state(repo).list = r
      end
    end)
  end
end

local function act(cmd)
  return function()
    local name = M.session_at_cursor()
    if not name then
      return para().notify("no session on this line", vim.log.levels.WARN)
    end
    require("para.commands").run({ cmd }, name)
  end
end

local function help()
  local lines = {}
  for _, k in ipairs(KEYS) do
    table.insert(lines, string.format("%-5s %s", k[1], k[3]))
  end
  table.insert(lines, "r     refresh")
  table.insert(lines, "g?    this help")
  para().notify("sessions buffer keys:\n" .. table.concat(lines, "\n"))
end

local function make_buffer(cwd)
  local buf = vim.api.nvim_create_buf(false, true)
  vim.bo[buf].buftype = "nofile"
  vim.bo[buf].bufhidden = "hide"
  vim.bo[buf].swapfile = false
  vim.b[buf].para_cwd = cwd
  pcall(vim.api.nvim_buf_set_name, buf, "para://sessions/" .. cwd)
  vim.bo[buf].filetype = "para"
  vim.bo[buf].modifiable = false
  local function map(lhs, fn, desc)
    vim.keymap.set("n", lhs, fn, { buffer = buf, nowait = true, silent = true, desc = "para: " .. desc })
  end
  for _, k in ipairs(KEYS) do
    -- integrate from the list lands the line's session; the message is para's default
    map(k[1], act(k[2]), k[3])
  end
  map("r", function()
    M.refresh(buf)
  end, "refresh")
  map("g?", help, "help")
  return buf
end

--- Open (or show again) the sessions buffer of the repository of `cwd`.
---@param cwd string
---@return integer bufnr
function M.open(cwd)
  local buf
  for b, _ in pairs(buffers) do
    if vim.api.nvim_buf_is_valid(b) and vim.b[b].para_cwd == cwd then
      buf = b
    end
  end
  if not buf then
    buf = make_buffer(cwd)
    buffers[buf] = "" -- its repository is known after the first answer
  end
  local win = vim.fn.bufwinid(buf)
  if win == -1 then
    local cur = vim.api.nvim_get_current_buf()
    local empty = vim.api.nvim_buf_get_name(cur) == ""
      and vim.bo[cur].buftype == ""
      and not vim.bo[cur].modified
      and vim.api.nvim_buf_line_count(cur) == 1
      and vim.api.nvim_buf_get_lines(cur, 0, 1, false)[1] == ""
    if not empty then -- an empty start-up window is taken over, anything else kept
      vim.cmd(string.format("botright %dsplit", require("para.config").options.list_height))
    end
    vim.api.nvim_win_set_buf(0, buf)
    vim.wo[0][0].number = false
    vim.wo[0][0].wrap = false
    vim.wo[0][0].cursorline = true
  else
    vim.api.nvim_set_current_win(win)
  end
  M.refresh(buf)
  return buf
end

--- The lines of `:Para show` for a SessionDetail.
---@param d table a SessionDetail
---@param now number?
---@return string[]
function M.detail_lines(d, now)
  local lines = {
    "session   " .. d.name .. "  (" .. (d.state or d.status) .. ")",
    "branch    " .. tostring(d.branch) .. " from " .. tostring(d.base_branch),
    "worktree  " .. tostring(d.worktree) .. (d.worktree_exists and "" or " (gone)"),
    "ahead     " .. tostring(d.ahead or "?") .. "  " .. (d.diffstat or ""),
  }
  if val(d.task) then
    table.insert(lines, "task      " .. d.task)
  end
  if M.remote(d.agent) then
    table.insert(lines, "agent     " .. M.runs_on(d.agent) .. ", " .. M.harvest(d.agent, now))
  end
  for _, c in ipairs(val(d.commits) or {}) do
    table.insert(lines, "  " .. c.sha:sub(1, 10) .. " " .. c.subject)
  end
  for _, n in ipairs(val(d.notes) or {}) do
    table.insert(lines, "note: " .. n)
  end
  return lines
end

--- `:Para show`: a session in a scratch split.
---@param d table a SessionDetail
function M.show_detail(d)
  local lines = M.detail_lines(d)
  local buf = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].modifiable = false
  vim.bo[buf].bufhidden = "wipe"
  vim.b[buf].para_cwd = d.worktree_exists and d.worktree or nil
  vim.b[buf].para_session = d.name
  vim.cmd("botright " .. math.min(#lines, 15) .. "split")
  vim.api.nvim_win_set_buf(0, buf)
end

return M
