// What the site's pages share: the error box (message, code, fix), the model list from the server's
// /api/models (the folders of one model_kind), and the load progress bar. `ui` holds a page's elements
// by the names used here (error, errorTitle, errorMessage, errorFix, model, progress, progressBar,
// progressLabel).

export function showError(ui, err) {
  ui.error.hidden = false;
  ui.error.dataset.code = err?.code ?? "unknown";
  ui.errorTitle.textContent = err?.code ? `Error (${err.code})` : "Error";
  ui.errorMessage.textContent = err?.message ?? String(err);
  ui.errorFix.textContent = err?.fix ? `How to fix: ${err.fix}` : "";
}

export function clearError(ui) {
  ui.error.hidden = true;
  delete ui.error.dataset.code;
}

/** Fill the model selector with the served WebGPU folders of `kind` ("chat" | "embedding"; folders
 * built before model_kind existed, or unreadable ones, count as chat), select `wanted` (a folder
 * name) if it is there; `fix` tells how to build one when there is none. */
export async function listModels(ui, { kind, wanted, fix }) {
  const response = await fetch("/api/models");
  const { models } = await response.json();
  ui.model.replaceChildren();
  for (const m of models.filter((entry) => entry.target === "webgpu" && (entry.model_kind ?? "chat") === kind)) {
    const option = new Option(m.error ? `${m.id} (unavailable)` : m.id, m.url);
    option.disabled = Boolean(m.error);
    ui.model.append(option);
  }
  if (!ui.model.options.length) showError(ui, { message: "No models are being served.", fix });
  const match = models.find((m) => m.id === wanted);
  if (match) ui.model.value = match.url;
}

/** A load progress event ({stage, file, loaded, total}) on the progress bar. */
export function showProgress(ui, event) {
  ui.progress.hidden = false;
  const { stage, file, loaded, total } = event;
  ui.progressLabel.textContent = `${stage}${file ? ` ${file}` : ""}`;
  if (total) ui.progressBar.value = loaded / total;
}
