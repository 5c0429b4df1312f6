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

  if cfg.agent_terminals then
    h.ok("agents dispatched in editor mode run in Neovim terminals (" .. cfg.terminal .. ")")
  end
  if vim.fn.executable("tmux") == 1 then
    h.ok("tmux is available (mode tmux, :Para log names the window)")
  else
    h.info("tmux is not installed: agents run in Neovim terminals or headless")
  end
end

return M
