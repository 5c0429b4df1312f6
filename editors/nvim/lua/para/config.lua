local M = {}

---@class para.Config
---@field cmd string[] How to reach the sidecar: the forwarder `para lsp` (stdio).
---@field terminal "tab"|"split"|"vsplit"|"hidden" Where agents dispatched in `editor` mode run.
---@field terminal_focus boolean Move to an agent's terminal when it starts.
---@field agent_terminals boolean Offer this Neovim to run agents (`para/subscribe` `editor`).
---@field dispatch_mode string? Mode for `:Para dispatch`/`:Para plan` (nil: para's `agent.mode`).
---@field agent string? Profile for `:Para dispatch` (nil: para's `agent.default`).
---@field list_height integer Height of the sessions window.
---@field conflicts_interval number Seconds between two conflict forecasts of the sessions buffer.
---@field notify table<string, boolean> Event kinds that raise a `vim.notify`.
---@field open_conflicts boolean Put conflicted files of your own integrate into the quickfix list and open the first.

---@type para.Config
M.defaults = {
  cmd = { "para", "lsp" },
  terminal = "tab",
  terminal_focus = false,
  agent_terminals = true,
  dispatch_mode = nil,
  agent = nil,
  list_height = 12,
  conflicts_interval = 10,
  notify = { conflicted = true, integrated = true, agent_exited = true, integration_failed = true },
  open_conflicts = true,
}

---@type para.Config
M.options = vim.deepcopy(M.defaults)

--- Merge user options over the defaults; a bad value is an error naming the key.
---@param opts para.Config|table|nil
---@return para.Config
function M.setup(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("para: setup() takes a table of options", 2)
  end
  local o = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts)
  -- the table form of vim.validate works on 0.10 and 0.11
  vim.validate({
    cmd = { o.cmd, "table" },
    terminal = {
      o.terminal,
      function(v)
        return vim.tbl_contains({ "tab", "split", "vsplit", "hidden" }, v)
      end,
      "one of tab, split, vsplit, hidden",
    },
    terminal_focus = { o.terminal_focus, "boolean" },
    agent_terminals = { o.agent_terminals, "boolean" },
    dispatch_mode = { o.dispatch_mode, "string", true },
    agent = { o.agent, "string", true },
    list_height = { o.list_height, "number" },
    conflicts_interval = { o.conflicts_interval, "number" },
    notify = { o.notify, "table" },
    open_conflicts = { o.open_conflicts, "boolean" },
  })
  M.options = o
  return o
end

return M
