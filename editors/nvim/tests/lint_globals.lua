-- A Lua lint without extra tools: LuaJIT's own bytecode listing (jit.bc) of every plugin file,
-- checked for reads and writes of globals other than Lua's, LuaJIT's and `vim`. A misspelt or
-- out-of-scope local shows up here as a global. Run with the plugin directory as argument.
local root = assert(arg[1] or os.getenv("PARA_PLUGIN"), "usage: nvim -l lint_globals.lua <plugin dir>")
local bc = require("jit.bc")
local allowed = {}
for name in pairs(_G) do
  allowed[name] = true -- what the runtime defines before any plugin runs
end
allowed.vim = true
local problems = {}
local files = vim.list_extend(
  vim.fn.globpath(root, "lua/**/*.lua", false, true),
  vim.fn.globpath(root, "plugin/*.lua", false, true)
)
for _, file in ipairs(files) do
  local fn, err = loadfile(file)
  if not fn then
    table.insert(problems, err)
  else
    local chunks = {}
    bc.dump(fn, {
      write = function(_, s)
        table.insert(chunks, s)
      end,
      flush = function() end,
    }, true)
    for line in table.concat(chunks):gmatch("[^\n]+") do
      local op, name = line:match('%s(G[GS]ET)%s.-; "([^"]+)"')
      if op and (op == "GSET" or not allowed[name]) then
        table.insert(problems, string.format("%s: %s %s", file:sub(#root + 2), op, name))
      end
    end
  end
end
io.stdout:write(string.format("%d files\n", #files))
for _, p in ipairs(problems) do
  io.stdout:write(p .. "\n")
end
os.exit(#problems == 0 and #files > 0 and 0 or 1)
