-- Views of one session: its diff in a tab, its worktree in a tab.

local M = {}

--- `:Para diff`: the session against its fork point (uncommitted work included).
---@param r table a `para/diff` answer
function M.diff(r)
  vim.cmd("tabnew")
  local buf = vim.api.nvim_get_current_buf()
  local lines = vim.split(r.patch or r.stat or "", "\n", { plain = true })
  if r.truncated then
    table.insert(lines, "[para: the patch was truncated]")
  end
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].buftype = "nofile"
  vim.bo[buf].bufhidden = "wipe"
  vim.bo[buf].swapfile = false
  pcall(vim.api.nvim_buf_set_name, buf, "para://diff/" .. r.session)
  vim.bo[buf].filetype = "diff"
  vim.bo[buf].modifiable = false
  vim.b[buf].para_session = r.session
end

--- `:Para open`: a new tab whose directory is the session's worktree.
---@param d table a SessionDetail
function M.open(d)
  if not d.worktree_exists then
    return require("para").notify(
      string.format("%s has no worktree (%s): :Para resume %s", d.name, d.state or d.status, d.name),
      vim.log.levels.WARN
    )
  end
  vim.cmd("tabnew")
  vim.cmd.tcd(vim.fn.fnameescape(d.worktree))
end

return M
