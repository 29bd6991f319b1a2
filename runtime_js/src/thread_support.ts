// Whether this page can run the CPU module on several threads, and how many to use by default.
// Kept apart from cpu_threads.ts (which loads TVM's JS runtime) so that backend choice stays light.

/** True where threads can run: SharedArrayBuffer exists (cross-origin isolated page) and workers too. */
export function threadsAvailable(): boolean {
  const g = globalThis as { crossOriginIsolated?: boolean; Worker?: unknown };
  return typeof SharedArrayBuffer !== "undefined" && g.crossOriginIsolated !== false && typeof g.Worker === "function";
}

/** Threads to use by default: every core the browser reports, at most 8. */
export function defaultThreadCount(): number {
  const n = (globalThis as { navigator?: { hardwareConcurrency?: unknown } }).navigator?.hardwareConcurrency;
  return Math.max(1, Math.min(8, typeof n === "number" ? n : 1));
}
