-- The para protocol as the plugin sees it (docs/protocol.md is the reference).
-- Every wire name the plugin uses is spelled here and nowhere else, so that a file generated
-- from the sidecar's Structs can replace this one. Keys are snake_case, as on the wire.

---@class para.protocol
local M = {}

--- Protocol version this plugin speaks (`para/hello` must answer the same).
M.VERSION = 1

--- Requests, client -> sidecar, by verb.
M.methods = {
  hello = "para/hello",
  start = "para/start",
  list = "para/list",
  show = "para/show",
  finish = "para/finish",
  integrate = "para/integrate",
  ["continue"] = "para/continue",
  abort = "para/abort",
  conflicts = "para/conflicts",
  cancel = "para/cancel",
  dispatch = "para/dispatch",
  report = "para/report",
  status = "para/status",
  wait = "para/wait",
  diff = "para/diff",
  plans = "para/plans",
  recover = "para/recover",
  resume = "para/resume",
  clean = "para/clean",
  config = "para/config",
  events = "para/events",
  trust = "para/trust",
  subscribe = "para/subscribe",
  unsubscribe = "para/unsubscribe",
  shutdown = "para/shutdown",
}

--- Notifications, sidecar -> client.
M.notifications = {
  sessions_changed = "para/sessionsChanged",
  event = "para/event",
}

--- Requests, sidecar -> client.
M.server_requests = {
  run_in_terminal = "para/runInTerminal",
}

--- JSON-RPC error codes of para errors (`error.data.code` carries the name).
M.errors = {
  internal = -32000,
  invalid_input = -32001,
  not_a_repository = -32002,
  not_found = -32003,
  already_exists = -32004,
  wrong_state = -32005,
  git_failed = -32006,
  config_error = -32007,
  conflict = -32008,
  busy = -32009,
  sidecar_unavailable = -32010,
  version_mismatch = -32011,
  nothing_to_do = -32012,
  dirty = -32013,
  check_failed = -32014,
  untrusted = -32015,
}

--- Built-in launcher profiles (`agents` config adds more).
M.builtin_profiles = { "claude", "codex", "gemini", "aider", "opencode", "scripted" }

--- Agent modes of `para/dispatch`.
M.modes = { "auto", "headless", "tmux", "editor" }

--- Integration strategies of `para/integrate`.
M.strategies = { "squash", "merge", "rebase", "ff" }

---@class para.Report
---@field task string
---@field tests "passed"|"failed"|"unknown"
---@field todos_done integer?
---@field todos_total integer?
---@field blocked string?
---@field updated_at number

---@class para.Session
---@field name string
---@field status "active"|"review"|"integrating"|"conflicted"|"integrated"|"cancelled"
---@field state string status refined by git facts (`dirty`, `missing`, `off-branch`, `<op>-pending`)
---@field branch string
---@field worktree string
---@field base_branch string
---@field base_commit string
---@field current boolean?
---@field dirty boolean
---@field worktree_exists boolean
---@field ahead integer?
---@field task string?
---@field integration table?
---@field agent table?
---@field notes string[]

---@class para.AgentStatus
---@field profile string
---@field mode string
---@field pid integer?
---@field state "running"|"exited"|"failed"|"lost"|"unknown"
---@field exit_code integer?
---@field log string?
---@field window string?

---@class para.SessionStatus
---@field name string
---@field status string
---@field task string?
---@field report para.Report?
---@field agent para.AgentStatus?
---@field ahead integer?
---@field stale boolean

---@class para.Event
---@field id integer
---@field ts number
---@field session string?
---@field kind string
---@field data table
---@field repo string

---@class para.SessionsChanged
---@field repo string
---@field sessions string[]
---@field kind string

---@class para.RunInTerminal
---@field session string
---@field worktree string
---@field title string
---@field argv string[]
---@field env table<string, string>

---@class para.ResponseError
---@field code integer
---@field message string
---@field data { code: string, [string]: any }?

return M
