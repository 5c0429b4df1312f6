local sessions = require("para.ui.sessions")
local conflicts = require("para.ui.conflicts")

local function eq(want, got, what)
  assert(vim.deep_equal(want, got), string.format("%s: want %s, got %s", what, vim.inspect(want), vim.inspect(got)))
end

local LIST = {
  repo = "/r",
  sessions = {
    { name = "a", status = "active", state = "dirty", worktree = "/r/.para/worktrees/a", current = true },
    { name = "b", status = "conflicted", state = "conflicted", worktree = "/r/.para/worktrees/b" },
    { name = "c", status = "review", state = "review", worktree = "/r/.para/worktrees/c", worktree_exists = false },
  },
}
local STATUS = {
  sessions = {
    {
      name = "a",
      ahead = 2,
      agent = { state = "running", mode = "editor" },
      report = { task = "writing\ntests", tests = "passed", todos_done = 1, todos_total = 3 },
    },
    { name = "b", ahead = 1, agent = { state = "failed", mode = "headless", exit_code = 3 } },
  },
}
local FORECAST = {
  sessions = {
    { session = "a", target = "main", clean = true, files = {}, hunks = {} },
    { session = "b", target = "main", clean = false, files = { "x.txt" }, hunks = { ["x.txt"] = { { 4, 9 } } } },
  },
  pairs = { { a = "a", b = "c", files = { "y.txt", "z.txt" }, hunks = { ["y.txt"] = { { 2, 3 } } } } },
}

return {
  {
    "collisions per session",
    function()
      eq({ b = { "main (1)" }, a = { "c (2)" }, c = { "a (2)" } }, sessions.collisions(FORECAST), "collisions")
      eq({}, sessions.collisions(nil), "no forecast")
      eq(
        { a = { "unrelated to main" } },
        sessions.collisions({ sessions = { { session = "a", target = "main", unrelated = true } } }),
        "unrelated"
      )
    end,
  },
  {
    "render: one aligned line per session, names by line",
    function()
      local lines, names = sessions.render(LIST, STATUS, FORECAST)
      eq("para: /r", lines[1], "title")
      eq({ [3] = "a", [4] = "b", [5] = "c" }, names, "names")
      eq("SESSION  STATE       AGENT              AHEAD  COLLIDES  REPORT", lines[2], "header")
      eq("*a       dirty       running/editor     2      c (2)     writing tests [1/3] tests passed", lines[3], "a")
      eq("b        conflicted  failed/headless 3  1      main (1)", lines[4], "b")
      eq("c        review                                a (2)", lines[5], "c")
      assert(lines[#lines]:find("g? help", 1, true), "key hint")
    end,
  },
  {
    "render: a PORTS column when sessions have ports",
    function()
      local list = {
        repo = "/r",
        sessions = {
          { name = "p", status = "active", state = "active", ports = { 20000, 20001 } },
          { name = "q", status = "active", state = "active", ports = {} },
        },
      }
      local lines = sessions.render(list, nil, nil)
      eq("SESSION  STATE   PORTS        AGENT  AHEAD  COLLIDES  REPORT", lines[2], "header")
      eq("p        active  20000 20001", lines[3], "p")
      eq("q        active", lines[4], "q")
    end,
  },
  {
    "render and detail: an agent on another host says where and how old its last harvest is",
    function()
      local now = 10000
      local list = {
        repo = "/r",
        sessions = {
          { name = "far", status = "active", state = "active" },
          { name = "gone", status = "active", state = "active" },
          { name = "near", status = "active", state = "active" },
        },
      }
      local sha = "3f2a9c1d0e" .. string.rep("7", 30)
      local status = {
        sessions = {
          { name = "far", agent = { state = "running", mode = "headless", executor = "h1", host = "b1.lan" } },
          {
            name = "gone",
            agent = {
              state = "lost",
              mode = "headless",
              executor = "h1",
              host = "b1.lan",
              harvested_at = now - 125,
              harvested_commit = sha,
            },
          },
          { name = "near", agent = { state = "running", mode = "headless", executor = "local" } },
        },
      }
      local lines = sessions.render(list, status, nil, now)
      eq("far      active  running/headless @h1 (never harvested)", lines[3], "never harvested")
      eq("gone     active  lost/headless @h1 (harvest 2m ago)", lines[4], "lost")
      eq("near     active  running/headless", lines[5], "local: nothing extra")
      local run = { executor = "h1", placement = { host = "b1.lan" }, harvested_at = now - 7, harvested_commit = sha }
      local d =
        { name = "far", state = "active", branch = "para/far", base_branch = "main", worktree = "/w", agent = run }
      eq("agent     runs on h1 (b1.lan), last harvest 7s ago (3f2a9c1d0e)", sessions.detail_lines(d, now)[5], "show")
      run.lost = true
      eq("agent     ran on h1 (b1.lan), last harvest 7s ago (3f2a9c1d0e)", sessions.detail_lines(d, now)[5], "lost")
      d.agent = { executor = "local", pid = 5 }
      eq(4, #sessions.detail_lines(d, now), "a local agent adds no line")
      eq(
        { "3s", "2h", "3d" },
        { sessions.ago(now - 3, now), sessions.ago(now - 7200, now), sessions.ago(now - 259200, now) },
        "ages"
      )
    end,
  },
  {
    "render: no sessions",
    function()
      local lines, names = sessions.render({ repo = "/r", sessions = {} }, nil, nil)
      eq({}, names, "names")
      assert(lines[3]:find("no sessions", 1, true), lines[3])
    end,
  },
  {
    "forecast into quickfix items",
    function()
      local items = conflicts.items_of_forecast(FORECAST, LIST)
      eq({
        { filename = "/r/.para/worktrees/b/x.txt", lnum = 4, col = 1, text = "b collides with main", type = "W" },
        { filename = "/r/.para/worktrees/a/y.txt", lnum = 2, col = 1, text = "a collides with c", type = "W" },
        { filename = "/r/.para/worktrees/a/z.txt", lnum = 1, col = 1, text = "a collides with c", type = "W" },
      }, items, "items")
    end,
  },
  {
    "a paused integration: markers found in the worktree's files",
    function()
      local dir = vim.fn.tempname()
      vim.fn.mkdir(dir, "p")
      vim.fn.writefile(
        { "one", "<<<<<<< ours", "a", "=======", "b", ">>>>>>> theirs", "x", "<<<<<<< ours", "=======", ">>>>>>> t" },
        dir .. "/f.txt"
      )
      local items = conflicts.items_of_conflict({
        session = "s",
        target = "main",
        worktree = dir,
        files = { "f.txt", "gone.bin" },
        hunks = { ["gone.bin"] = { { 7, 8 } } },
      })
      eq(
        { 2, 8, 7 },
        vim.tbl_map(function(i)
          return i.lnum
        end, items),
        "lines"
      )
      eq(dir .. "/gone.bin", items[3].filename, "file without markers")
      eq("s: conflict with main", items[1].text, "text")
    end,
  },
}
