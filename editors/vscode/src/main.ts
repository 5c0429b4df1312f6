// activate/deactivate only: everything else hangs off one Ctx.
import * as vscode from "vscode";
import { createCommands } from "./commands";
import { Ctx, trace } from "./ctx";
import { SessionsTree } from "./tree";

let ctx: Ctx | undefined;

export function activate(context: vscode.ExtensionContext): void {
  const began = Date.now();
  const folder = vscode.workspace.workspaceFolders?.[0];
  try {
    ctx = new Ctx(context, folder?.uri.fsPath ?? process.cwd());
    context.subscriptions.push(ctx);
    for (const [id, fn] of Object.entries(createCommands(ctx))) {
      context.subscriptions.push(vscode.commands.registerCommand(id, fn));
    }
    context.subscriptions.push(
      vscode.window.createTreeView("paraSessions", { treeDataProvider: new SessionsTree(ctx), showCollapseAll: true }),
    );
    if (folder) void ctx.start();
    else void vscode.commands.executeCommand("setContext", "para.state", "nofolder");
  } catch (e) {
    void vscode.window.showErrorMessage(
      `para: the extension failed to start: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  trace("activated", { ms: Date.now() - began });
}

export function deactivate(): void {
  ctx?.dispose();
  ctx = undefined;
}
