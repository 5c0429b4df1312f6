local commands = require("para.commands")

local function eq(want, got, what)
  assert(vim.deep_equal(want, got), string.format("%s: want %s, got %s", what, vim.inspect(want), vim.inspect(got)))
end

local cases = {}

-- words -> parsed (or the error)
local PARSE = {
  { {}, { sub = "list", pos = {}, opts = {} } },
  { { "start" }, { sub = "start", pos = {}, opts = {} } },
  { { "start", "s1", "--base", "dev" }, { sub = "start", pos = { "s1" }, opts = { base = "dev" } } },
  {
    { "dispatch", "t1", "-f", "a.md", "--file", "b.md", "--agent", "scripted" },
    { sub = "dispatch", pos = { "t1" }, opts = { file = { "a.md", "b.md" }, agent = "scripted" } },
  },
  {
    { "dispatch", "--mode", "editor", "--", "fix", "the", "-f", "bug" },
    { sub = "dispatch", pos = {}, opts = { mode = "editor" }, rest = "fix the -f bug" },
  },
  { { "dispatch", "--" }, { sub = "dispatch", pos = {}, opts = {}, rest = "" } },
  {
    { "cancel", "s1", "--discard", "--force" },
    { sub = "cancel", pos = { "s1" }, opts = { discard = true, force = true } },
  },
  { { "integrate", "--dry-run" }, { sub = "integrate", pos = {}, opts = { dry_run = true } } },
  {
    { "integrate", "land", "it", "--strategy", "merge" },
    { sub = "integrate", pos = { "land", "it" }, opts = { strategy = "merge" } },
  },
  { { "start", "-" }, { sub = "start", pos = { "-" }, opts = {} } },
  {
    { "restart", "s1", "--stop", "--", "also", "add", "tests" },
    { sub = "restart", pos = { "s1" }, opts = { stop = true }, rest = "also add tests" },
  },
  { { "send", "s1", "--", "use", "tabs" }, { sub = "send", pos = { "s1" }, opts = {}, rest = "use tabs" } },
  { { "stop" }, { sub = "stop", pos = {}, opts = {} } },
}
for _, c in ipairs(PARSE) do
  table.insert(cases, {
    "parse " .. table.concat(c[1], " "),
    function()
      local got, err = commands.parse(c[1])
      assert(err == nil, err)
      eq(c[2], got, table.concat(c[1], " "))
    end,
  })
end

local BAD = {
  { { "start", "--bogus" }, "unknown option --bogus" },
  { { "dispatch", "-f" }, "-f needs a value" },
  { { "integrate", "--target" }, "--target needs a value" },
}
for _, c in ipairs(BAD) do
  table.insert(cases, {
    "refuse " .. table.concat(c[1], " "),
    function()
      local got, err = commands.parse(c[1])
      eq(nil, got, "result")
      eq(c[2], err, "error")
    end,
  })
end

table.insert(cases, {
  "complete subcommands",
  function()
    eq({ "cancel", "config", "conflicts", "continue" }, commands.complete("c", "Para c"), "c")
    eq({ "diff", "dispatch" }, commands.complete("d", "Para d"), "d")
    eq(vim.tbl_count(commands.subcommands), #commands.complete("", "Para "), "all")
    eq({}, commands.complete("", "Para start "), "start takes a new name")
    eq({ "--agent" }, commands.complete("--a", "Para dispatch --a"), "dispatch options")
    eq({ "editor" }, commands.complete("e", "Para dispatch --mode e"), "modes")
    eq({ "recover", "restart", "resume" }, commands.complete("re", "Para re"), "re")
    eq({ "--stop", "--" }, commands.complete("-", "Para restart s1 -"), "restart options")
  end,
})

return cases
