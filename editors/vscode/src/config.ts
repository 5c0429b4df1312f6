// The extension's own settings: only editor concerns. Everything para already configures
// stays in para's files ("Para: Edit Configuration" opens them).
import * as vscode from "vscode";

export function paraPath(): string {
  return vscode.workspace.getConfiguration("para").get<string>("path")?.trim() || "para";
}

export function agentTerminals(): boolean {
  return vscode.workspace.getConfiguration("para").get<boolean>("agentTerminals") ?? true;
}
