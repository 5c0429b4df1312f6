// The end-to-end run: the built .vsix installed in a real code-server, its workbench opened
// in Chromium, everything done through the UI as a user would (tests/test_vscode.py starts
// code-server and the sidecar's environment, then runs this). Prints one JSON line per step
// and per measurement; exits non-zero at the first step that does not happen.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { chromium, Page } from "playwright-core";

const URL = env("CS_URL");
const REPO = env("PARA_TEST_REPO");
const PARA = env("PARA_BIN");
const SHOTS = env("SHOTS_DIR");
const TRACE = env("PARA_VSCODE_TRACE");
const GATE = env("AGENT_GATE"); // the scripted agent waits for this file (its task says so)
// an agent on another host (a real sshd the test started): the executor's name, the profiles
// (PARA_AGENTS) of its scripted agent, and the file that lets it go on to commit and report
const REMOTE_EXECUTOR = env("REMOTE_EXECUTOR");
const REMOTE_AGENTS = env("REMOTE_AGENTS");
const REMOTE_GATE = env("REMOTE_GATE");
const STEP_MS = 60_000; // a UI step that takes longer than this is not going to happen

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

function say(what: string, data: Record<string, unknown> = {}): void {
  console.log(JSON.stringify({ step: what, ...data }));
}

function para(...args: string[]): string {
  return execFileSync(PARA, args, { cwd: REPO, encoding: "utf8" });
}

function paraWith(extra: Record<string, string>, ...args: string[]): string {
  return execFileSync(PARA, args, { cwd: REPO, encoding: "utf8", env: { ...process.env, ...extra } });
}

function git(...args: string[]): string {
  return execFileSync("git", args, { cwd: REPO, encoding: "utf8" });
}

function traced(): { event: string; t: number; [k: string]: unknown }[] {
  if (!fs.existsSync(TRACE)) return [];
  return fs
    .readFileSync(TRACE, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + STEP_MS;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

let shot = 0;
async function screenshot(page: Page, name: string): Promise<void> {
  const file = path.join(SHOTS, `e2e-${String(++shot).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file });
  say("screenshot", { file });
}

function row(page: Page, label: string) {
  // a row of the Sessions view whose label is exactly this session's name
  return page.locator(`#workbench\\.parts\\.sidebar .monaco-list-row[aria-label^="${label} "]`);
}

async function palette(page: Page, command: string): Promise<void> {
  // The palette can lose the focus it just got (a terminal closing, a notification): then
  // it closes, and the command is typed again.
  for (let attempt = 1; ; attempt++) {
    try {
      await page.locator(".part.editor").click({ position: { x: 200, y: 120 } });
      await page.keyboard.press("F1");
      const input = page.locator(".quick-input-widget input.input");
      await input.fill(`>${command}`, { timeout: 10_000 });
      await page
        .locator(".quick-input-list .monaco-list-row", { hasText: command })
        .first()
        .waitFor({ timeout: 10_000 });
      await page.keyboard.press("Enter");
      return;
    } catch (e) {
      if (attempt >= 3) throw e;
      say("palette retry", { command, attempt });
      await page.keyboard.press("Escape");
    }
  }
}

// Answer the quick input titled `title`: type `text` and Enter (for a pick, the first match).
async function answer(page: Page, title: string, text: string, pickLabel?: string): Promise<void> {
  await page.locator(".quick-input-widget .quick-input-title", { hasText: title }).waitFor({ timeout: STEP_MS });
  const input = page.locator(".quick-input-widget input.input");
  await input.fill(text);
  if (pickLabel) {
    await page
      .locator(".quick-input-list .monaco-list-row", { hasText: pickLabel })
      .first()
      .waitFor({ timeout: STEP_MS });
  }
  await page.keyboard.press("Enter");
}

async function main(): Promise<void> {
  const started = Date.now();
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      "--disable-quic",
      "--disable-sync",
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.on("pageerror", (e) => say("page error", { message: e.message }));
  try {
    await page.goto(`${URL}/?folder=${encodeURIComponent(REPO)}`);
    await page.locator(".monaco-workbench").waitFor({ timeout: STEP_MS * 2 });
    const workbench = Date.now();
    say("workbench visible", { ms: workbench - started });
    const activated = await until("the extension's activation", () => traced().find((e) => e.event === "activated"));
    say("measure activation", {
      activate_ms: activated.ms,
      after_workbench_ms: activated.t - workbench,
    });

    // 1. the Para view, with its welcome (no session yet)
    await page.locator('.activitybar .action-item a[aria-label^="Para"]').click();
    await page.getByText("No sessions yet.").waitFor({ timeout: STEP_MS });
    // a wider side bar, so that the screenshots show the items' descriptions
    const bar = await page.locator("#workbench\\.parts\\.sidebar").boundingBox();
    if (bar) {
      await page.mouse.move(bar.x + bar.width + 1, bar.y + bar.height / 2);
      await page.mouse.down();
      await page.mouse.move(bar.x + bar.width + 300, bar.y + bar.height / 2, { steps: 5 });
      await page.mouse.up();
    }
    await page
      .locator(".welcome-view-content a, .welcome-view-content .monaco-button", { hasText: "Start session" })
      .first()
      .waitFor();
    await screenshot(page, "welcome");

    // 2. Para: Start Session from the command palette
    await palette(page, "Para: Start Session");
    await answer(page, "Para: Start Session", "ui-one");
    await row(page, "ui-one").waitFor({ timeout: STEP_MS });
    if (!git("branch", "--list", "para/ui-one").trim())
      throw new Error("no branch para/ui-one after starting it from the palette");
    await screenshot(page, "start-from-palette");

    // 3. `para start` from a shell: the tree follows by itself (no polling in the extension)
    for (const name of ["cli-one", "cli-two", "cli-three"]) {
      const cliStart = Date.now();
      para("start", name);
      const cliDone = Date.now();
      await row(page, name).waitFor({ timeout: STEP_MS });
      const shown = Date.now();
      say("measure cli start to tree", {
        session: name,
        after_exit_ms: shown - cliDone,
        after_spawn_ms: shown - cliStart,
      });
    }
    para("cancel", "cli-three");
    await row(page, "cli-three").waitFor({ state: "detached", timeout: STEP_MS });
    await screenshot(page, "cli-start");

    // 4. dispatch a scripted agent: it runs in a VS Code terminal and reaches review
    await palette(page, "Para: Dispatch Agent");
    await answer(page, "Para: Dispatch Agent — task", "TASK_1_hello", "tasks/TASK_1_hello.md");
    await answer(page, "Para: agent profile", "scripted", "scripted");
    await answer(page, "Para: Dispatch Agent — session name", "agent-one");
    await page
      .locator(".terminal-tabs-entry, .single-terminal-tab, .panel .composite-title", { hasText: "para: agent-one" })
      .first()
      .waitFor({ timeout: STEP_MS });
    say("agent terminal open");
    // the agent said what it does (para status) and waits: its item shows it, live
    await page
      .locator(`#workbench\\.parts\\.sidebar .monaco-list-row[aria-label^="agent-one "]`, { hasText: "saying hello" })
      .waitFor({ timeout: STEP_MS });
    await screenshot(page, "agent-terminal");
    fs.writeFileSync(GATE, "go\n");
    await until("agent-one in review", () => {
      const s = JSON.parse(para("show", "agent-one", "--json")) as { status: string };
      return s.status === "review" ? s : undefined;
    });
    await page
      .locator(`#workbench\\.parts\\.sidebar .monaco-list-row[aria-label^="agent-one "]`, { hasText: "review" })
      .waitFor({ timeout: STEP_MS });
    const agent = (JSON.parse(para("show", "agent-one", "--json")) as { agent: { mode: string } | null }).agent;
    if (agent?.mode !== "editor") throw new Error(`the agent ran in ${agent?.mode} mode, not in the editor`);
    await screenshot(page, "agent-review");

    // its changed file, clicked: the diff of the session against its base
    await row(page, "agent-one").locator(".monaco-tl-twistie").click();
    await page.locator("#workbench\\.parts\\.sidebar .monaco-list-row", { hasText: "hello.txt" }).click();
    await page
      .locator(".tabs-container .tab", { hasText: "agent-one: hello.txt (against main)" })
      .waitFor({ timeout: STEP_MS });
    await page
      .locator(".editor-instance .modified", { hasText: "hello from the agent" })
      .first()
      .waitFor({ timeout: STEP_MS });
    await screenshot(page, "diff");
    await page.keyboard.press("Control+W");

    // 5. integrate from the palette: dry-run preview, confirm, message; the item leaves the tree
    await palette(page, "Para: Integrate");
    await answer(page, "Para: Integrate", "agent-one", "agent-one");
    const dialog = page.locator(".monaco-dialog-box");
    await dialog.waitFor({ timeout: STEP_MS });
    const preview = await dialog.innerText();
    if (!/Land 1 commit of agent-one onto main/.test(preview))
      throw new Error(`unexpected integrate preview: ${preview}`);
    await screenshot(page, "integrate-preview");
    await dialog.locator(".monaco-button", { hasText: /^Integrate$/ }).click();
    await answer(page, "Para: Integrate agent-one", "hello lands");
    await row(page, "agent-one").waitFor({ state: "detached", timeout: STEP_MS });
    const landed = git("show", "main:hello.txt");
    if (landed !== "hello from the agent\n") throw new Error(`main:hello.txt is ${JSON.stringify(landed)}`);
    say("integrated", { subject: git("log", "-1", "--format=%s", "main").trim() });
    await screenshot(page, "integrated");

    // 6. a conflict: the notification, and Abort restores the session
    const wt = (name: string) => (JSON.parse(para("show", name, "--json")) as { worktree: string }).worktree;
    fs.writeFileSync(path.join(wt("cli-one"), "shared.txt"), "from cli-one\n");
    fs.writeFileSync(path.join(wt("cli-two"), "shared.txt"), "from cli-two\n");
    para("integrate", "cli-one lands", "--session", "cli-one");
    await row(page, "cli-one").waitFor({ state: "detached", timeout: STEP_MS });
    await palette(page, "Para: Integrate");
    await answer(page, "Para: Integrate", "cli-two", "cli-two");
    await dialog.waitFor({ timeout: STEP_MS });
    if (!/will conflict in: shared\.txt/.test(await dialog.innerText()))
      throw new Error("the preview does not forecast the conflict");
    await dialog.locator(".monaco-button", { hasText: /^Integrate$/ }).click();
    await answer(page, "Para: Integrate cli-two", "cli-two lands");
    const toast = page.locator(".notification-toast", { hasText: "paused on conflicts" });
    await toast.waitFor({ timeout: STEP_MS });
    await page
      .locator(`#workbench\\.parts\\.sidebar .monaco-list-row[aria-label^="cli-two "]`, { hasText: "conflicted" })
      .waitFor({ timeout: STEP_MS });
    for (const action of ["Open conflicted files", "Continue", "Abort"]) {
      await toast.locator(".monaco-button", { hasText: action }).waitFor({ timeout: STEP_MS });
    }
    await screenshot(page, "conflict");
    const pre = (JSON.parse(para("show", "cli-two", "--json")) as { integration: { pre: string } }).integration.pre;
    await toast.locator(".monaco-button", { hasText: "Abort" }).click();
    await page
      .locator(`#workbench\\.parts\\.sidebar .monaco-list-row[aria-label^="cli-two "]`, { hasText: "active" })
      .waitFor({ timeout: STEP_MS });
    const after = JSON.parse(para("show", "cli-two", "--json")) as { status: string; head: string };
    if (after.status !== "active" || after.head !== pre)
      throw new Error(`after Abort: ${JSON.stringify(after)} (expected active at ${pre})`);
    say("aborted", { head: after.head });
    await screenshot(page, "aborted");

    // 7. an agent on another host: its item says where (@h1) and how old the work brought home
    // is; before its first harvest, "never harvested"; its agent child, the host
    paraWith(
      { PARA_AGENTS: REMOTE_AGENTS },
      "dispatch",
      "far",
      "-p",
      "work on the host",
      "--agent",
      "w",
      "--executor",
      REMOTE_EXECUTOR,
    );
    const far = () => page.locator(`#workbench\\.parts\\.sidebar .monaco-list-row[aria-label^="far "]`);
    await far()
      .filter({ hasText: `@${REMOTE_EXECUTOR} (never harvested)` })
      .waitFor({ timeout: STEP_MS });
    say("remote never harvested");
    fs.writeFileSync(REMOTE_GATE, "go\n");
    await far()
      .filter({ hasText: new RegExp(`@${REMOTE_EXECUTOR} \\(harvest \\d+[smhd] ago\\)`) })
      .waitFor({ timeout: STEP_MS });
    // expanded: its agent child says on which host (the tooltip says the same with the harvest)
    await far().locator(".monaco-tl-twistie").click();
    const child = page.locator("#workbench\\.parts\\.sidebar .monaco-list-row", {
      hasText: `w running on ${REMOTE_EXECUTOR} (127.0.0.1)`,
    });
    await child.waitFor({ timeout: STEP_MS });
    const agentText = await child.innerText();
    say("remote harvested", { agent: agentText });
    await screenshot(page, "remote-agent");
    para("cancel", "far");
    say("done", { ms: Date.now() - started });
  } catch (e) {
    await screenshot(page, "failure").catch(() => undefined);
    throw e;
  } finally {
    await browser.close();
  }
}

main().catch((e: unknown) => {
  say("failed", { error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
  process.exit(1);
});
