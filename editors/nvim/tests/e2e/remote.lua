-- An agent on another host (the test's real sshd as config `executors.h1`): the sessions
-- buffer and :Para show say where it runs and how old its last harvest is, first "never
-- harvested", then the harvest its status report caused; a local agent's line says nothing
-- extra; :checkhealth para lists h1 and whether `para executor check h1` passes.
local H = dofile(os.getenv("PARA_NVIM_TESTS") .. "/e2e/helpers.lua")
require("para").setup({ conflicts_interval = 0 })
vim.cmd.cd(H.repo)

local function line_of(buf, name)
  for _, l in ipairs(vim.api.nvim_buf_get_lines(buf, 0, -1, false)) do
    if l:match("^%*?" .. name .. " ") then
      return l
    end
  end
end

local function detail(name)
  H.ok("show " .. name)
  local lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  vim.cmd("close")
  return lines
end

local drawn = H.expect("ParaSessionsDrawn", function(d)
  return (line_of(d.buf, "far") or ""):find("@h1 (never harvested)", 1, true) ~= nil
end, function()
  vim.cmd("Para list")
end, "far never harvested in the sessions buffer")
local buf = drawn.buf
H.out("never", { far = line_of(buf, "far"), here = line_of(buf, "here") })
H.out("show_never", { far = detail("far"), here = detail("here") })

-- the agent goes on: it commits and reports, which harvests its commit
vim.fn.writefile({ "go" }, assert(os.getenv("REMOTE_GATE")))
H.expect("ParaSessionsDrawn", function(d)
  return d.buf == buf and (line_of(buf, "far") or ""):find("@h1 %(harvest %d+[smhd] ago%)") ~= nil
end, function() end, "far harvested in the sessions buffer")
H.out("harvested", { far = line_of(buf, "far"), here = line_of(buf, "here") })
H.out("show_harvested", detail("far"))

vim.cmd("checkhealth para")
H.out("health", H.lines(0))
vim.cmd("tabonly")
H.done()
