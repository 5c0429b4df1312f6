// The status bar item: connected / version mismatch / sidecar down (click to restart),
// running agents, integrations queued.
import * as vscode from "vscode";
import type { State } from "./connection";
import type { Snapshot } from "./tree_model";

export function statusText(state: State, snap: Snapshot): { text: string; tooltip: string; alert: boolean } {
  switch (state.kind) {
    case "connected": {
      const sessions = snap.status?.sessions ?? [];
      const agents = sessions.filter((s) => s.agent?.state === "running").length;
      const queued = (snap.list?.sessions ?? []).filter((s) => s.status === "integrating").length;
      const conflicted = (snap.list?.sessions ?? []).filter((s) => s.status === "conflicted").length;
      const parts = ["$(git-merge) para"];
      if (agents) parts.push(`$(hubot) ${agents}`);
      if (queued) parts.push(`$(sync~spin) ${queued} integrating`);
      if (conflicted) parts.push(`$(warning) ${conflicted}`);
      return {
        text: parts.join(" "),
        tooltip:
          `para ${state.hello.version} (protocol ${state.hello.protocol}), sidecar pid ${state.hello.pid}: ` +
          `${agents} agent(s) running, ${queued} integration(s) queued, ${conflicted} conflicted`,
        alert: conflicted > 0,
      };
    }
    case "connecting":
      return { text: "$(loading~spin) para", tooltip: "connecting to the para sidecar", alert: false };
    case "mismatch":
      return {
        text: "$(error) para: version mismatch",
        tooltip: `${state.message} (click to restart the sidecar)`,
        alert: true,
      };
    case "missing":
      return { text: "$(error) para: not found", tooltip: state.message, alert: true };
    case "down":
      return {
        text: "$(debug-disconnect) para: sidecar down",
        tooltip: `${state.message} (click to restart)`,
        alert: true,
      };
    case "stopped":
      return { text: "$(circle-slash) para", tooltip: "not connected", alert: false };
  }
}

export class StatusBar implements vscode.Disposable {
  private item = vscode.window.createStatusBarItem("para.status", vscode.StatusBarAlignment.Left, 10);

  constructor() {
    this.item.name = "Para";
    this.item.show();
  }

  update(state: State, snap: Snapshot): void {
    const t = statusText(state, snap);
    this.item.text = t.text;
    this.item.tooltip = t.tooltip;
    this.item.backgroundColor = t.alert ? new vscode.ThemeColor("statusBarItem.warningBackground") : undefined;
    this.item.command =
      state.kind === "connected"
        ? "workbench.view.extension.para"
        : state.kind === "missing"
          ? { title: "Set para.path", command: "workbench.action.openSettings", arguments: ["para.path"] }
          : "para.restartSidecar";
  }

  dispose(): void {
    this.item.dispose();
  }
}
