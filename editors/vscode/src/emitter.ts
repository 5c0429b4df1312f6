// A minimal event emitter, so that the modules that must run without VS Code (connection.ts,
// tree_model.ts) do not need vscode.EventEmitter.
export type Listener<T> = (value: T) => void;

export class Emitter<T> {
  private listeners = new Set<Listener<T>>();

  on(listener: Listener<T>): { dispose(): void } {
    this.listeners.add(listener);
    return { dispose: () => this.listeners.delete(listener) };
  }

  fire(value: T): void {
    for (const l of [...this.listeners]) {
      try {
        l(value);
      } catch {
        // one broken listener must not starve the others of live updates
      }
    }
  }

  clear(): void {
    this.listeners.clear();
  }
}
