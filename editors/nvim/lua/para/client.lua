-- One connection to the sidecar through `para lsp` (stdio), owned by the plugin's state.
-- It connects on first use, says hello (refusing another protocol), subscribes, and answers
-- every request it sent itself when `para lsp` goes away, so no callback waits forever.

local P = require("para.protocol")

local M = {}

---@class para.Connection
---@field cfg para.Config
---@field rpc vim.lsp.rpc.PublicClient?
---@field state "idle"|"connecting"|"ready"|"closed"
---@field hello table? the sidecar's `para/hello` answer
---@field waiting fun(err: para.ResponseError?)[] callbacks waiting for the connection
---@field pending table<integer, fun(err: para.ResponseError?, result: any)> requests in flight
---@field handlers { notification: fun(method: string, params: table), server_request: fun(method: string, params: table): any, any }
---@field on_ready fun(conn: para.Connection)? called after each (re)connection
---@field failures integer connection failures in a row
---@field stopping boolean
local Connection = {}
Connection.__index = Connection

--- An error object as the sidecar would send it, for failures on this side.
---@param name string
---@param message string
---@return para.ResponseError
function M.error(name, message)
  return { code = P.errors[name] or P.errors.internal, message = message, data = { code = name } }
end

--- Params for the wire: an empty table must go as `{}` (Neovim encodes `{}` as `[]`).
---@param params table?
---@return table
function M.params(params)
  if params == nil or next(params) == nil then
    return vim.empty_dict()
  end
  return params
end

---@param cfg para.Config
---@param handlers table
---@return para.Connection
function M.new(cfg, handlers)
  return setmetatable({
    cfg = cfg,
    state = "idle",
    waiting = {},
    pending = {},
    handlers = handlers,
    failures = 0,
    stopping = false,
    next_id = 0,
  }, Connection)
end

function Connection:_settle(err)
  local waiting = self.waiting
  self.waiting = {}
  for _, cb in ipairs(waiting) do
    cb(err)
  end
end

function Connection:_fail(err)
  self.state = "closed"
  self.failures = self.failures + 1
  local rpc = self.rpc
  self.rpc = nil
  if rpc and not rpc.is_closing() then
    rpc.terminate()
  end
  self:_settle(err)
end

---@param code integer
---@param signal integer
function Connection:_exited(code, signal)
  self.rpc = nil
  local was = self.state
  self.state = "closed"
  local pending = self.pending
  self.pending = {}
  local err = M.error(
    "sidecar_unavailable",
    string.format("para lsp exited (code %d, signal %d); it restarts on next use", code, signal)
  )
  for _, cb in pairs(pending) do
    cb(err)
  end
  self:_settle(err)
  if was == "ready" and not self.stopping and self.on_lost then
    self.on_lost(self, code)
  end
end

--- Call `cb(err)` once the connection is ready (connecting first if needed).
---@param cb fun(err: para.ResponseError?)
function Connection:ensure(cb)
  if self.state == "ready" and self.rpc and not self.rpc.is_closing() then
    return cb(nil)
  end
  table.insert(self.waiting, cb)
  if self.state == "connecting" then
    return
  end
  self.state = "connecting"
  self.stopping = false
  local conn = self
  local rpc -- declared first: on_exit compares against it
  local ok, started = pcall(vim.lsp.rpc.start, self.cfg.cmd, {
    notification = function(method, params)
      conn.handlers.notification(method, params)
    end,
    server_request = function(method, params)
      return conn.handlers.server_request(method, params)
    end,
    on_exit = function(code, signal)
      -- a libuv callback: leave the fast context before touching state and UI
      vim.schedule(function()
        -- an older connection's exit must not close the one that replaced it
        if conn.rpc == nil or conn.rpc == rpc then
          conn:_exited(code, signal)
        end
      end)
    end,
  }, { cwd = vim.fn.getcwd() })
  if not ok then
    return self:_fail(
      M.error(
        "sidecar_unavailable",
        string.format("cannot start %s: %s", table.concat(self.cfg.cmd, " "), tostring(started))
      )
    )
  end
  rpc = started
  self.rpc = rpc
  self:_raw(P.methods.hello, { client = "para.nvim", protocol = P.VERSION }, function(err, hello)
    if err then
      return self:_fail(err)
    end
    if hello.protocol ~= P.VERSION then
      return self:_fail(
        M.error(
          "version_mismatch",
          string.format(
            "the sidecar speaks protocol %s, this plugin %d: update the plugin or para",
            tostring(hello.protocol),
            P.VERSION
          )
        )
      )
    end
    self.hello = hello
    local sub = { events = true, editor = self.cfg.agent_terminals }
    self:_raw(P.methods.subscribe, sub, function(err2)
      if err2 then
        return self:_fail(err2)
      end
      self.state = "ready"
      self.failures = 0
      self:_settle(nil)
      if self.on_ready then
        self.on_ready(self)
      end
    end)
  end)
end

function Connection:_raw(method, params, cb)
  self.next_id = self.next_id + 1
  local key = self.next_id
  self.pending[key] = cb
  local ok = self.rpc
    and self.rpc.request(method, M.params(params), function(err, result)
      if self.pending[key] then
        self.pending[key] = nil
        cb(err, result)
      end
    end)
  if not ok then
    self.pending[key] = nil
    cb(M.error("sidecar_unavailable", "para lsp is not running"), nil)
  end
end

--- Send a request once connected; `cb(err, result)` is always called exactly once.
---@param method string
---@param params table?
---@param cb fun(err: para.ResponseError?, result: any)
function Connection:request(method, params, cb)
  self:ensure(function(err)
    if err then
      return cb(err, nil)
    end
    self:_raw(method, params, cb)
  end)
end

--- Leave: LSP shutdown + exit for this connection only (the sidecar stays up).
function Connection:stop()
  self.stopping = true
  local rpc = self.rpc
  if not rpc or rpc.is_closing() then
    return
  end
  rpc.request("shutdown", nil, function()
    rpc.notify("exit", nil)
  end)
end

--- Stop at once (Neovim is exiting): closing `para lsp`'s stdin ends it.
function Connection:terminate()
  self.stopping = true
  if self.rpc and not self.rpc.is_closing() then
    self.rpc.terminate()
  end
end

return M
