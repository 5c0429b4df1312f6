-- Shared by the e2e scripts (tests/test_nvim.py runs them against a real sidecar).
local H = {}

H.repo = assert(os.getenv("REPO"), "REPO not set")

function H.out(kind, value)
  io.stdout:write(kind .. " " .. vim.json.encode(value) .. "\n")
end

function H.wait(what, fn, ms)
  assert(vim.wait(ms or 60000, fn, 10), "timed out waiting for " .. what)
end

-- the next User autocmd `pattern` whose data satisfies `pred`, while `action` runs
function H.expect(pattern, pred, action, what)
  local got
  local id = vim.api.nvim_create_autocmd("User", {
    pattern = pattern,
    callback = function(ev)
      if not got and (pred == nil or pred(ev.data)) then
        got = ev.data
      end
    end,
  })
  action()
  H.wait(what or pattern, function()
    return got ~= nil
  end)
  vim.api.nvim_del_autocmd(id)
  return got
end

-- run `:Para <line>` and return its ParaCommandDone data
function H.para(line)
  local sub = vim.split(line, " ")[1]
  return H.expect("ParaCommandDone", function(d)
    return d.command == sub
  end, function()
    vim.cmd("Para " .. line)
  end, ":Para " .. line)
end

function H.ok(line)
  local d = H.para(line)
  assert(d.ok, ":Para " .. line .. " failed: " .. vim.inspect(d.error))
  return d.result
end

-- the real CLI, in another process
function H.cli(args, cwd)
  local r = vim.system(vim.list_extend({ "para" }, args), { cwd = cwd or H.repo, text = true }):wait()
  assert(r.code == 0, "para " .. table.concat(args, " ") .. " exited " .. r.code .. ": " .. r.stderr)
  return r.stdout
end

function H.git(args, cwd)
  local r = vim.system(vim.list_extend({ "git" }, args), { cwd = cwd or H.repo, text = true }):wait()
  assert(r.code == 0, "git " .. table.concat(args, " ") .. ": " .. r.stderr)
  return r.stdout
end

function H.lines(buf)
  return table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, false), "\n")
end

function H.done()
  io.stdout:write("OK\n")
  vim.cmd("qa!")
end

return H
