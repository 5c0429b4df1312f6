-- nvim --headless --clean --cmd 'set rtp+=editors/nvim' -l tests/run_unit.lua
-- Runs every tests/unit/*_spec.lua (each returns a list of {name, fn}); exits non-zero on a failure.
local here = os.getenv("PARA_NVIM_TESTS") or vim.fs.dirname(debug.getinfo(1, "S").source:sub(2))
local failed, passed = 0, 0
for _, file in ipairs(vim.fn.glob(here .. "/unit/*_spec.lua", false, true)) do
  for _, case in ipairs(dofile(file)) do
    local ok, err = pcall(case[2])
    if ok then
      passed = passed + 1
    else
      failed = failed + 1
      io.stdout:write(string.format("FAIL %s: %s: %s\n", vim.fs.basename(file), case[1], tostring(err)))
    end
  end
end
io.stdout:write(string.format("%d passed, %d failed\n", passed, failed))
os.exit(failed == 0 and passed > 0 and 0 or 1)
