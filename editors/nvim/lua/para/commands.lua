-- :Para {subcommand} [args]: parsing (pure, unit-tested), completion and the subcommands.

local P = require("para.protocol")

local M = {}

-- options taking a value, and switches; anything else starting with "-" is refused
local VALUE_OPTS = {
  ["-f"] = "file",
  ["--file"] = "file",
  ["--agent"] = "agent",
  ["--mode"] = "mode",
  ["--base"] = "base",
  ["--strategy"] = "strategy",
  ["--target"] = "target",
}
local SWITCHES = {
  ["--force"] = "force",
  ["--discard"] = "discard",
  ["--all"] = "all",
  ["--dry-run"] = "dry_run",
  ["--stop"] = "stop",
}

---@class para.Args
---@field sub string
---@field pos string[] positional words
---@field opts table<string, any> options (`file` is a list; switches are true)
---@field rest string? everything after `--`, joined by spaces
---@field session string? the session named by the caller (not parsed)

--- Split `:Para` words into subcommand, positionals, options and the text after `--`.
---@param words string[]
---@return para.Args? args, string? err
function M.parse(words)
  local args = { sub = words[1] or "list", pos = {}, opts = {}, rest = nil }
  local i = 2
  while i <= #words do
    local w = words[i]
    if w == "--" then
      args.rest = table.concat(words, " ", i + 1)
      break
    elseif VALUE_OPTS[w] then
      local v = words[i + 1]
      if v == nil then
        return nil, w .. " needs a value"
      end
      local key = VALUE_OPTS[w]
      if key == "file" then
        args.opts.file = args.opts.file or {}
        table.insert(args.opts.file, v)
      else
        args.opts[key] = v
      end
      i = i + 1
    elseif SWITCHES[w] then
      args.opts[SWITCHES[w]] = true
    elseif w:sub(1, 1) == "-" and #w > 1 then
      return nil, "unknown option " .. w
    else
      table.insert(args.pos, w)
    end
    i = i + 1
  end
  return args, nil
end

local function para()
  return require("para")
end

local function done(name, err, result)
  para().fire("ParaCommandDone", { command = name, ok = err == nil, result = result, error = err })
end

local function fail(name, err)
  local msg = para().message(err)
  para().notify(msg, vim.log.levels.ERROR)
  done(name, err, nil)
end

--- A request whose answer is shown by `show(result)`; errors are notified.
local function call(name, verb, params, show)
  para().request(verb, params, function(err, result)
    if err then
      if err.data and err.data.code == "conflict" and (err.data.files or err.data.markers) then
        require("para.ui.conflicts").from_error(err)
        if err.data.files and require("para.config").options.notify.conflicted then
          return done(name, err, nil) -- the `conflicted` event says it, shorter
        end
      end
      return fail(name, err)
    end
    if show then
      show(result)
    end
    done(name, nil, result)
  end)
end

-- the session a command acts on: a key of the sessions buffer names it (args.session),
-- else the first word, else the current buffer's
local function ctx_session(args)
  local ctx = para().context()
  return ctx.cwd, args.session or args.pos[1] or ctx.session
end

local function session_params(args, extra)
  local cwd, session = ctx_session(args)
  return vim.tbl_extend("force", { cwd = cwd, session = session }, extra or {})
end

local function info(fmt, ...)
  para().notify(string.format(fmt, ...))
end

-- words a text prompt may need: asked with vim.ui.input when not given
local function ask(prompt, given, cb)
  if given and given ~= "" then
    return cb(given)
  end
  vim.ui.input({ prompt = prompt }, function(text)
    if text and text ~= "" then
      cb(text)
    end
  end)
end

local function dispatch_params(args, extra)
  local cfg = require("para.config").options
  return vim.tbl_extend("force", {
    cwd = para().context().cwd,
    agent = args.opts.agent or cfg.agent,
    mode = args.opts.mode or cfg.dispatch_mode,
    base = args.opts.base,
  }, extra)
end

---@class para.Subcommand
---@field usage string
---@field impl fun(args: para.Args)
---@field complete (fun(lead: string, args: para.Args): string[])?

local function complete_sessions()
  return M.session_names()
end

---@type table<string, para.Subcommand>
M.subcommands = {
  start = {
    usage = "start [name] [--base BRANCH]",
    impl = function(args)
      call("start", "start", { cwd = para().context().cwd, name = args.pos[1], base = args.opts.base }, function(r)
        info("started %s in %s", r.name, r.worktree)
      end)
    end,
  },
  dispatch = {
    usage = "dispatch [name] [-f file]... [--agent PROFILE] [--mode MODE] [-- prompt]",
    impl = function(args)
      local function go(prompt)
        local files = args.opts.file
        local p = dispatch_params(args, { name = args.pos[1], prompt = prompt })
        if files and #files == 1 then
          p.file = files[1]
        elseif files then
          p.files = files
        end
        call("dispatch", "dispatch", p, function(r)
          if r.plan then
            info("plan %s started", tostring(r.plan.id))
          else
            info("dispatched %s (%s)", r.name, tostring(r.task))
          end
        end)
      end
      if args.opts.file then
        return go(nil)
      end
      ask("para task: ", args.rest, go)
    end,
    complete = function(lead, args)
      local prev = args._prev
      if prev == "-f" or prev == "--file" then
        return M.task_files(lead)
      elseif prev == "--agent" then
        return M.profiles()
      elseif prev == "--mode" then
        return P.modes
      end
      return { "-f", "--agent", "--mode", "--base", "--" }
    end,
  },
  plan = {
    usage = "plan [dir] [--agent PROFILE] [--mode MODE]",
    impl = function(args)
      call("plan", "dispatch", dispatch_params(args, { file = args.pos[1] or "tasks" }), function(r)
        info("plan %s started", tostring(r.plan and r.plan.id))
      end)
    end,
    complete = function(lead)
      return M.task_files(lead, true)
    end,
  },
  list = {
    usage = "list",
    impl = function()
      require("para.ui.sessions").open(para().context().cwd)
      done("list", nil, nil)
    end,
  },
  show = {
    usage = "show [name]",
    impl = function(args)
      call("show", "show", session_params(args), function(r)
        require("para.ui.sessions").show_detail(r)
      end)
    end,
    complete = complete_sessions,
  },
  integrate = {
    usage = "integrate [message] [--strategy S] [--target T] [--dry-run]",
    impl = function(args)
      local ctx = para().context()
      local message = args.rest or (#args.pos > 0 and table.concat(args.pos, " ") or nil)
      call("integrate", "integrate", {
        cwd = ctx.cwd,
        session = args.session or ctx.session,
        message = message,
        strategy = args.opts.strategy,
        target = args.opts.target,
        dry_run = args.opts.dry_run,
      }, function(r)
        if r.dry_run then
          info("%s would land on %s %s", r.session, r.target, r.clean and "cleanly" or "with conflicts")
        else
          info("integrated %s into %s", r.name, r.integration and r.integration.target or "?")
        end
      end)
    end,
  },
  ["continue"] = {
    usage = "continue [name] [--force]",
    impl = function(args)
      call("continue", "continue", session_params(args, { force = args.opts.force }), function(r)
        info("integrated %s", r.name)
      end)
    end,
    complete = complete_sessions,
  },
  abort = {
    usage = "abort [name]",
    impl = function(args)
      call("abort", "abort", session_params(args), function(r)
        info("aborted the integration of %s: back at %s", r.name, (r.restored or ""):sub(1, 10))
      end)
    end,
    complete = complete_sessions,
  },
  finish = {
    usage = "finish [message]",
    impl = function(args)
      local ctx = para().context()
      local given = args.rest or (#args.pos > 0 and table.concat(args.pos, " ") or nil)
      ask("para finish message: ", given, function(message)
        call("finish", "finish", { cwd = ctx.cwd, session = ctx.session, message = message }, function(r)
          info("finished %s: %s kept for review", r.name, r.branch)
        end)
      end)
    end,
  },
  cancel = {
    usage = "cancel [name] [--discard] [--force]",
    impl = function(args)
      local p = session_params(args, { discard = args.opts.discard, force = args.opts.force })
      call("cancel", "cancel", p, function(r)
        info("cancelled %s (archived as %s; :Para recover brings it back)", r.name, tostring(r.archived_branch))
      end)
    end,
    complete = complete_sessions,
  },
  recover = {
    usage = "recover [name]",
    impl = function(args)
      call("recover", "recover", session_params(args), function(r)
        info("recovered %s in %s", r.name, r.worktree)
      end)
    end,
    complete = complete_sessions,
  },
  resume = {
    usage = "resume [name]",
    impl = function(args)
      call("resume", "resume", session_params(args), function(r)
        info("%s is at %s%s", r.name, r.worktree, r.recreated and " (recreated)" or "")
      end)
    end,
    complete = complete_sessions,
  },
  stop = {
    usage = "stop [name]",
    impl = function(args)
      call("stop", "stop", session_params(args), function(r)
        info("%s", r.message)
      end)
    end,
    complete = complete_sessions,
  },
  restart = {
    usage = "restart [name] [--stop] [-- follow-up]",
    impl = function(args)
      local p = session_params(args, { prompt = args.rest ~= "" and args.rest or nil, stop = args.opts.stop })
      call("restart", "restart", p, function(r)
        if r.queue_position and r.queue_position ~= vim.NIL then
          info("the agent of %s is queued (position %d)", r.name, r.queue_position)
        else
          info("restarted the agent of %s", r.name)
        end
      end)
    end,
    complete = function(lead, args)
      if vim.startswith(lead, "-") then
        return { "--stop", "--" }
      end
      return #args.pos == 0 and M.session_names() or {}
    end,
  },
  send = {
    usage = "send [name] [-- message]",
    impl = function(args)
      ask("para message for the agent: ", args.rest, function(message)
        call("send", "send", session_params(args, { message = message }), function(r)
          if r.delivery == "running" then
            info("message %d for %s: its agent reads it with its next status report", r.id, r.session)
          else
            info("message %d for %s kept: :Para restart %s gives it to the agent", r.id, r.session, r.session)
          end
        end)
      end)
    end,
    complete = complete_sessions,
  },
  diff = {
    usage = "diff [name]",
    impl = function(args)
      call("diff", "diff", session_params(args), function(r)
        require("para.ui.views").diff(r)
      end)
    end,
    complete = complete_sessions,
  },
  conflicts = {
    usage = "conflicts",
    impl = function()
      local cwd = para().context().cwd
      para().request("list", { cwd = cwd, all = false }, function(err, listed)
        if err then
          return fail("conflicts", err)
        end
        call("conflicts", "conflicts", { cwd = cwd }, function(r)
          para().repo_state(listed.repo).conflicts = r
          require("para.ui.conflicts").forecast(r, listed)
        end)
      end)
    end,
  },
  log = {
    usage = "log [name]",
    impl = function(args)
      local cwd, session = ctx_session(args)
      call("log", "status", { cwd = cwd, session = session }, function(r)
        require("para.ui.terminal").follow(r.sessions and r.sessions[1])
      end)
    end,
    complete = complete_sessions,
  },
  open = {
    usage = "open [name]",
    impl = function(args)
      call("open", "show", session_params(args), function(r)
        require("para.ui.views").open(r)
      end)
    end,
    complete = complete_sessions,
  },
  config = {
    usage = "config [user|project]",
    impl = function(args)
      local scope = args.pos[1] or "user"
      call("config", "config", { cwd = para().context().cwd, action = "path" }, function(r)
        local path = r.paths and r.paths[scope]
        if not path then
          return para().notify("no " .. scope .. " configuration file here", vim.log.levels.WARN)
        end
        vim.cmd.edit(vim.fn.fnameescape(path))
      end)
    end,
    complete = function()
      return { "user", "project" }
    end,
  },
}

--- Session names for completion: from the last list, else asked (briefly) now.
---@return string[]
function M.session_names()
  local st = para()._state
  local rs = st.last_repo and st.repos[st.last_repo]
  local list = rs and rs.list
  if not list then
    local err, r = para().request_sync("list", { cwd = para().context().cwd }, 1000)
    if err or not r then
      return {}
    end
    para().repo_state(r.repo).list = r
    list = r
  end
  return vim.tbl_map(function(s)
    return s.name
  end, list.sessions or {})
end

--- Launcher profiles: the built-in ones and those of the `agents` configuration.
---@return string[]
function M.profiles()
  local names = vim.deepcopy(P.builtin_profiles)
  local err, r = para().request_sync("config", { cwd = para().context().cwd, action = "get", key = "agents" }, 1000)
  if not err and r and type(r.value) == "table" then
    for name in pairs(r.value) do
      if not vim.tbl_contains(names, name) then
        table.insert(names, name)
      end
    end
  end
  table.sort(names)
  return names
end

--- Task files (`*.md`) and directories, also under `tasks/`.
---@param lead string
---@param dirs_only boolean?
---@return string[]
function M.task_files(lead, dirs_only)
  local out = {}
  for _, f in ipairs(vim.fn.getcompletion(lead, "file")) do
    if f:sub(-1) == "/" or (not dirs_only and f:match("%.md$")) then
      table.insert(out, f)
    end
  end
  return out
end

--- Completion for the user command.
---@param lead string
---@param line string
---@return string[]
function M.complete(lead, line)
  local words = vim.split(line, "%s+", { trimempty = true })
  table.remove(words, 1) -- "Para"
  if lead ~= "" then
    table.remove(words) -- the word being completed
  end
  local function filter(items)
    return vim.tbl_filter(function(s)
      return vim.startswith(s, lead)
    end, items)
  end
  if #words == 0 then
    local names = vim.tbl_keys(M.subcommands)
    table.sort(names)
    return filter(names)
  end
  local sc = M.subcommands[words[1]]
  if not sc or not sc.complete then
    return {}
  end
  local args = M.parse(words) or { pos = {}, opts = {} }
  args._prev = words[#words]
  if args._prev == "-f" or args._prev == "--file" then
    return M.task_files(lead)
  end
  return filter(sc.complete(lead, args))
end

--- Run `:Para` with its words (`session`: act on that session, as the sessions buffer's keys do).
---@param words string[]
---@param session string?
function M.run(words, session)
  local args, err = M.parse(words)
  if not args then
    return para().notify(err .. " (:Para " .. table.concat(words, " ") .. ")", vim.log.levels.ERROR)
  end
  args.session = session
  local sc = M.subcommands[args.sub]
  if not sc then
    local names = vim.tbl_keys(M.subcommands)
    table.sort(names)
    return para().notify(
      string.format("unknown subcommand %q; one of: %s", args.sub, table.concat(names, ", ")),
      vim.log.levels.ERROR
    )
  end
  sc.impl(args)
end

return M
