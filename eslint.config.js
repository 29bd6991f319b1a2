// ESLint (flat config) for the browser runtime's TypeScript: `npm run lint`.
import js from "@eslint/js";
import { defineConfig } from "eslint/config";
import tseslint from "typescript-eslint";

export default defineConfig(
  { ignores: ["dist/", "node_modules/", ".venv/", "out/", "site/", "bench/"] },
  {
    files: ["runtime_js/src/**/*.ts"],
    extends: [js.configs.recommended, tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // a leading underscore marks a value dropped on purpose; rest siblings drop keys of an object
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", ignoreRestSiblings: true }],
      // async methods that implement a Promise-returning interface need no await
      "@typescript-eslint/require-await": "off",
    },
  },
);
