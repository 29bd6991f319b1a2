// runtime_js/site_markdown.ts (dist/site-markdown.js, the chat page's markdown renderer). In a page
// it is marked + DOMPurify (tests/test_browser.py checks hostile markdown in chromium); here, without
// a DOM, DOMPurify cannot run and renderMarkdown must fall back to escaped text, never raw HTML.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";

import * as esbuild from "esbuild";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

async function importSiteMarkdown() {
  const result = await esbuild.build({
    entryPoints: [path.join(root, "runtime_js", "site_markdown.ts")], bundle: true, format: "esm", target: "es2022",
    platform: "browser", write: false, logLevel: "silent",
  });
  const dir = mkdtempSync(path.join(tmpdir(), "site-markdown-"));
  try {
    const file = path.join(dir, "site-markdown.mjs");
    writeFileSync(file, result.outputFiles[0].text);
    return await import(pathToFileURL(file).href);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("without a DOM, renderMarkdown escapes the text instead of passing HTML through", async () => {
  const { renderMarkdown } = await importSiteMarkdown();
  const html = renderMarkdown(`**hi** <img src=x onerror="alert(1)"> <script>alert(2)</script> & "q" 'a'`);
  assert.equal(html, "<p>**hi** &#60;img src=x onerror=&#34;alert(1)&#34;&#62; &#60;script&#62;alert(2)&#60;/script&#62; "
    + "&#38; &#34;q&#34; &#39;a&#39;</p>");
});
