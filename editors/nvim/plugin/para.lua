-- :Para {subcommand}; everything else loads on first use.
if vim.g.loaded_para then
  return
end
vim.g.loaded_para = true

vim.api.nvim_create_user_command("Para", function(opts)
  require("para").command(opts.fargs)
end, {
  nargs = "*",
  desc = "para: parallel sessions and agents",
  complete = function(lead, line)
    return require("para.commands").complete(lead, line)
  end,
})
