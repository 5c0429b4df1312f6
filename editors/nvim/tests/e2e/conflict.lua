-- Your integrate conflicts: the file with its markers, in the session's worktree, goes
-- into the quickfix list and opens; :Para abort (the session taken from that buffer)
-- restores the session.
local H = dofile(os.getenv("PARA_NVIM_TESTS") .. "/e2e/helpers.lua")
require("para").setup({})
vim.cmd.cd(H.repo)
local s = H.ok("start cf")
vim.fn.writefile({ "session side" }, s.worktree .. "/shared.txt")
vim.fn.writefile({ "main side" }, H.repo .. "/shared.txt")
H.git({ "add", "shared.txt" })
H.git({ "commit", "-q", "-m", "main side" })

vim.cmd.edit(vim.fn.fnameescape(s.worktree .. "/shared.txt"))
local conflicted
local ev_id = vim.api.nvim_create_autocmd("User", {
  pattern = "ParaEvent",
  callback = function(ev)
    if ev.data.kind == "conflicted" then
      conflicted = ev.data
    end
  end,
})
local d = H.para("integrate lands cf")
H.out("integrate", { ok = d.ok, code = d.error and d.error.data.code })
H.wait("the conflicted event", function()
  return conflicted ~= nil
end)
vim.api.nvim_del_autocmd(ev_id)
H.out("event", conflicted)
local qf = vim.fn.getqflist({ title = 1, items = 1 })
H.out("qf", {
  title = qf.title,
  items = vim.tbl_map(function(i)
    return { file = vim.api.nvim_buf_get_name(i.bufnr), lnum = i.lnum, text = i.text }
  end, qf.items),
})
-- :cfirst left the cursor in the file, with the markers on disk (re-read)
H.out("current", { file = vim.api.nvim_buf_get_name(0), line = vim.api.nvim_get_current_line() })
vim.cmd("cclose")
-- continue with the markers still there is refused; they go into quickfix
local refused = H.para("continue")
H.out("continue", { ok = refused.ok, code = refused.error.data.code, markers = refused.error.data.markers })
H.wait("the markers in quickfix", function()
  return vim.fn.getqflist({ title = 1 }).title == "para: markers left in cf"
end)
H.out(
  "markers_qf",
  vim.tbl_map(function(i)
    return { file = vim.api.nvim_buf_get_name(i.bufnr), lnum = i.lnum }
  end, vim.fn.getqflist())
)
vim.cmd("cclose")
local aborted = H.ok("abort")
H.out("aborted", aborted)
H.done()
