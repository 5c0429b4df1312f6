// The Sessions view: the pure model of tree_model.ts shown through a TreeDataProvider,
// refreshed only when para says something changed (no polling).
import * as vscode from "vscode";
import type { Ctx } from "./ctx";
import { agentNode, fileNodes, rootNodes, TreeNode } from "./tree_model";

const COLLAPSE: Record<TreeNode["collapsible"], vscode.TreeItemCollapsibleState> = {
  none: vscode.TreeItemCollapsibleState.None,
  collapsed: vscode.TreeItemCollapsibleState.Collapsed,
  expanded: vscode.TreeItemCollapsibleState.Expanded,
};

export class SessionsTree implements vscode.TreeDataProvider<TreeNode> {
  readonly onDidChangeTreeData: vscode.Event<void>;

  constructor(private ctx: Ctx) {
    this.onDidChangeTreeData = ctx.onChanged.event;
  }

  getTreeItem(n: TreeNode): vscode.TreeItem {
    const item = new vscode.TreeItem(n.label, COLLAPSE[n.collapsible]);
    item.id = n.id;
    item.description = n.description;
    item.tooltip = n.tooltip;
    item.iconPath = new vscode.ThemeIcon(n.icon);
    item.contextValue = n.contextValue;
    // name first, then the state: what screen readers say (and the end-to-end test reads)
    item.accessibilityInformation = { label: `${n.label} ${n.description ?? ""}` };
    if (n.kind === "file") {
      item.command = { title: "Show diff", command: "para.showDiff", arguments: [n] };
    } else if (n.kind === "agent") {
      item.command = {
        title: "Show agent",
        command: n.contextValue === "agent.terminal" ? "para.openTerminal" : "para.showLog",
        arguments: [n],
      };
    }
    return item;
  }

  async getChildren(n?: TreeNode): Promise<TreeNode[]> {
    if (!n) return this.ctx.state.kind === "connected" ? rootNodes(this.ctx.snapshot, this.ctx.showHistory) : [];
    if (n.children) return n.children;
    if (n.kind !== "session" || !n.session) return [];
    const agent = agentNode(n.session, this.ctx.sessionStatus(n.session), this.ctx.terminals.has(n.session));
    const files = fileNodes(n.session, await this.ctx.changedFiles(n.session));
    return agent ? [agent, ...files] : files;
  }
}
