import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["out/", "node_modules/", "*.vsix"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ["src/connection.ts", "src/tree_model.ts", "src/args.ts", "src/emitter.ts", "src/git_files.ts", "src/lsp_ext.ts", "src/store.ts"],
    rules: {
      // these run under node --test without VS Code: keep "vscode" out of them
      "no-restricted-imports": ["error", { paths: [{ name: "vscode", message: "this module must run without VS Code" }] }],
    },
  },
  {
    rules: {
      eqeqeq: "error",
      "@typescript-eslint/no-floating-promises": "off",
    },
  },
);
