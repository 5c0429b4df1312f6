-- :checkhealth para

local P = require("para.protocol")

local M = {}

function M.check()
  local h = vim.health
  h.start("para")
  if vim.fn.has("nvim-0.10") == 1 then
    h.ok("Neovim " .. tostring(vim.version()))
  else
    h.error("Neovim 0.10 or newer is needed", { "Upgrade Neovim" })
  end
  local cfg = require("para.config").options
  local exe = cfg.cmd[1]
  local path = exe and vim.fn.exepath(exe) or ""
  if path == "" then
    h.error(
      string.format("`%s` is not on PATH", tostring(exe)),
      { "pip install para_rpc into a virtualenv and put its bin/ on PATH, or set cmd in setup()" }
    )
    return
  end
  h.ok(string.format("`%s` is %s", exe, path))

  local res = vim.system({ path, "sidecar", "status", "--json" }, { text = true }):wait(30000)
  local ok, status = pcall(vim.json.decode, res.stdout or "")
  if not ok or type(status) ~= "table" then
    h.error("`para sidecar status --json` failed: " .. vim.trim((res.stderr or "") .. (res.stdout or "")))
    return
  end
  if not status.running then
    h.warn("no sidecar is running at " .. tostring(status.socket), { "para lsp starts one on the first :Para command" })
  else
    h.ok(string.format("sidecar %s (pid %s) at %s", status.version, tostring(status.pid), status.socket))
    if status.protocol == P.VERSION then
      h.ok("protocol " .. P.VERSION .. " matches")
    else
      h.error(
        string.format("the sidecar speaks protocol %s, this plugin %d", tostring(status.protocol), P.VERSION),
        { "para sidecar restart, or update the plugin together with para" }
      )
    end
  end
  local conn = require("para")._state.conn
  if conn and conn.state == "ready" then
    h.ok("connected through `" .. table.concat(cfg.cmd, " ") .. "`")
  else
    h.info("not connected yet (nothing connects before the first :Para command)")
  end

  M.check_executors(h, path)

  if cfg.agent_terminals then
    h.ok("agents dispatched in editor mode run in Neovim terminals (" .. cfg.terminal .. ")")
  end
  if vim.fn.executable("tmux") == 1 then
    h.ok("tmux is available (mode tmux, :Para log names the window)")
  else
    h.info("tmux is not installed: agents run in Neovim terminals or headless")
  end
end

--- The machines agents can run on (config `executors`, as the sidecar reads it for the current
--- directory's repository) and, for each that is not this machine, whether `para executor
--- check` passes: it connects to the host and compares git, python and para's version there.
---@param h table vim.health
---@param path string the `para` executable
function M.check_executors(h, path)
  local cwd = vim.fn.getcwd()
  local res = vim.system({ path, "executor", "list", "--json" }, { text = true, cwd = cwd }):wait(30000)
  local ok, listed = pcall(vim.json.decode, res.stdout or "", { luanil = { object = true, array = true } })
  if not ok or type(listed) ~= "table" or type(listed.executors) ~= "table" then
    local why = ok and type(listed) == "table" and listed.error and listed.error.message
      or vim.trim((res.stderr or "") .. (res.stdout or ""))
    h.info("executors: `para executor list` answered no list here (" .. why .. ")")
    return
  end
  local others = vim.tbl_filter(function(e)
    return e.kind ~= "local"
  end, listed.executors)
  if #others == 0 then
    h.ok("executors: local only (agents run on this machine; config `executors` adds SSH hosts)")
    return
  end
  for _, e in ipairs(others) do
    local where = string.format("%s (%s %s%s:%s)", e.name, e.kind, e.user and (e.user .. "@") or "", e.host, e.port)
    local chk = vim.system({ path, "executor", "check", e.name, "--json" }, { text = true, cwd = cwd }):wait(60000)
    local cok, got = pcall(vim.json.decode, chk.stdout or "", { luanil = { object = true, array = true } })
    local checked = cok and type(got) == "table" and got.checked
    if chk.code == 0 and checked then
      h.ok(
        string.format(
          "executor %s: check passed (para %s, protocol %s, python %s, %s)",
          where,
          checked.para,
          tostring(checked.protocol),
          tostring(checked.python),
          tostring(checked.git)
        )
      )
    else
      local why = cok and type(got) == "table" and got.error and got.error.message
        or vim.trim((chk.stderr or "") .. (chk.stdout or ""))
      h.error(
        string.format("executor %s: `para executor check %s` failed: %s", where, e.name, why),
        { "para executor check " .. e.name .. " says what is missing on the host (README, Executors)" }
      )
    end
  end
end

return M
