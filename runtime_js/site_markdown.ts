// The chat page's markdown renderer, bundled to dist/site-markdown.js for site/app.js (not part of
// the npm package): model text -> HTML with marked (GitHub-flavoured: lists, tables, fenced code),
// then sanitised by DOMPurify, so nothing a model writes can run script, handle events, load
// images or post forms. Code blocks get a "Copy" button.
import DOMPurify, { type Config } from "dompurify";
import { Marked } from "marked";

const marked = new Marked({ gfm: true, breaks: true, async: false });  // a model's single newline is a line break

const PURIFY: Config = {
  USE_PROFILES: { html: true },  // no SVG or MathML
  // no images (an <img> would fetch what the model names), nothing form-like, no styles
  FORBID_TAGS: ["img", "picture", "source", "video", "audio", "style", "form", "input", "button", "textarea",
                "select", "option", "iframe", "object", "embed"],
  FORBID_ATTR: ["style", "srcset"],
  SANITIZE_NAMED_PROPS: true,  // id/name values prefixed: model text cannot clobber the page's globals
};

// Links the model writes open in a new tab without the page as their opener. (Without a DOM,
// DOMPurify is a stub with no hooks; renderMarkdown escapes everything then.)
if (DOMPurify.isSupported) {
  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A" && node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    }
  });
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Markdown `text` as sanitised HTML (escaped plain text where DOMPurify cannot run: no DOM). */
export function renderMarkdown(text: string): string {
  if (!DOMPurify.isSupported) return `<p>${escapeHtml(text)}</p>`;
  return DOMPurify.sanitize(marked.parse(text) as string, PURIFY);
}

/** A "Copy" button for a code block: copies its text with navigator.clipboard. */
function copyButton(code: HTMLElement): HTMLButtonElement {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy";
  button.textContent = "Copy";
  button.setAttribute("aria-label", "Copy code");
  button.addEventListener("click", () => {
    void navigator.clipboard.writeText(code.textContent ?? "").then(
      () => { button.textContent = "Copied"; },
      () => { button.textContent = "Copy failed"; },
    ).finally(() => setTimeout(() => { button.textContent = "Copy"; }, 1500));
  });
  return button;
}

/** Replace `element`'s content with `text` rendered as markdown, each code block with a Copy button. */
export function renderMarkdownInto(element: HTMLElement, text: string): void {
  const fragment = DOMPurify.isSupported
    ? DOMPurify.sanitize(marked.parse(text) as string, { ...PURIFY, RETURN_DOM_FRAGMENT: true })
    : document.createRange().createContextualFragment(renderMarkdown(text));
  for (const pre of fragment.querySelectorAll("pre")) {
    const code = pre.querySelector("code") ?? pre;
    const block = document.createElement("div");
    block.className = "code-block";
    pre.replaceWith(block);
    block.append(copyButton(code), pre);
  }
  element.replaceChildren(fragment);
}
