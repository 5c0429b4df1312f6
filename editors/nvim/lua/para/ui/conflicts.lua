-- Conflicts into the quickfix list: the forecast (`:Para conflicts`) and the conflicted
-- files of a paused integration, with their markers, in the session's worktree.

local M = {}

local MAX_READ = 2 * 1024 * 1024

-- 1-based lines of `<<<<<<<` markers in a file (regular files only, size-capped)
local function marker_lines(path)
  local st = vim.uv.fs_lstat(path)
  if not st or st.type ~= "file" or st.size > MAX_READ then
    return {}
  end
  local out, n = {}, 0
  local f = io.open(path, "rb")
  if not f then
    return {}
  end
  for line in f:lines() do
    n = n + 1
    if line:sub(1, 7) == "<<<<<<<" then
      table.insert(out, n)
    end
  end
  f:close()
  return out
end

--- Quickfix items for a paused integration (`conflict` error data or `conflicted` event data).
---@param d table { session, worktree, files, hunks, target }
---@return table[]
function M.items_of_conflict(d)
  local items = {}
  for _, file in ipairs(d.files or {}) do
    local path = d.worktree .. "/" .. file
    local lines = marker_lines(path)
    if #lines == 0 then
      for _, h in ipairs((d.hunks or {})[file] or {}) do
        table.insert(lines, h[1])
      end
    end
    if #lines == 0 then
      lines = { 1 }
    end
    for _, l in ipairs(lines) do
      table.insert(items, {
        filename = path,
        lnum = l,
        col = 1,
        text = string.format("%s: conflict with %s", tostring(d.session), tostring(d.target)),
        type = "E",
      })
    end
  end
  return items
end

--- Quickfix items for a forecast: a session against its target, and pairs of sessions.
---@param forecast table a `para/conflicts` answer
---@param list table a `para/list` answer (for the worktrees)
---@return table[]
function M.items_of_forecast(forecast, list)
  local where = {}
  for _, s in ipairs(list.sessions or {}) do
    where[s.name] = s.worktree_exists ~= false and s.worktree or nil
  end
  local items = {}
  local function add(session, file, lnum, text)
    local base = where[session] or list.repo
    table.insert(items, { filename = base .. "/" .. file, lnum = lnum or 1, col = 1, text = text, type = "W" })
  end
  for _, s in ipairs(forecast.sessions or {}) do
    if s.unrelated then
      table.insert(items, { text = string.format("%s shares no history with %s", s.session, s.target) })
    end
    for _, file in ipairs(s.files or {}) do
      local h = (s.hunks or {})[file]
      add(s.session, file, h and h[1] and h[1][1], string.format("%s collides with %s", s.session, s.target))
    end
  end
  for _, p in ipairs(forecast.pairs or {}) do
    for _, file in ipairs(p.files or {}) do
      local h = (p.hunks or {})[file]
      add(p.a, file, h and h[1] and h[1][1], string.format("%s collides with %s", p.a, p.b))
    end
  end
  return items
end

--- `:Para conflicts`.
function M.forecast(forecast, list)
  local items = M.items_of_forecast(forecast, list)
  vim.fn.setqflist({}, " ", { title = "para conflicts (forecast)", items = items })
  if #items == 0 then
    return require("para").notify("no collisions forecast")
  end
  vim.cmd("botright copen")
end

--- A request of yours failed with `conflict`: the files, with markers, into quickfix.
---@param err para.ResponseError
function M.from_error(err)
  local d = err.data or {}
  if d.markers and d.session then
    -- continue refused: markers left, as "path:line" in the session's worktree
    return require("para").request("show", { session = d.session }, function(e, s)
      if not e then
        M.show({ title = "para: markers left in " .. d.session, items = M.items_of_markers(d.markers, s.worktree) })
      end
    end)
  end
  if not d.worktree or not d.files then
    return
  end
  M.show({ title = "para conflicts: " .. tostring(d.session), items = M.items_of_conflict(d) })
end

--- Quickfix items for `continue`'s `markers` ("path:line").
---@param markers string[]
---@param worktree string
---@return table[]
function M.items_of_markers(markers, worktree)
  local items = {}
  for _, m in ipairs(markers) do
    local path, line = m:match("^(.*):(%d+)$")
    if path then
      table.insert(items, {
        filename = worktree .. "/" .. path,
        lnum = tonumber(line),
        col = 1,
        text = "conflict marker left",
        type = "E",
      })
    end
  end
  return items
end

function M.show(what)
  local items = what.items
  vim.fn.setqflist({}, " ", { title = what.title, items = items })
  if require("para.config").options.open_conflicts and #items > 0 then
    vim.cmd("checktime") -- a loaded buffer of a conflicted file shows its markers, not the old text
    vim.cmd("botright copen")
    vim.cmd("cfirst")
  end
end

return M
