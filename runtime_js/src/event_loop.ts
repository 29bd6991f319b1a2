// Giving the event loop a turn during a generation. A wasm forward call is synchronous and its
// results are read back without waiting on anything, so without these turns a whole answer runs
// as one task: the page freezes, timers and input wait, and in a worker the message carrying an
// abort is only handled once the answer is finished.

type Wake = () => void;

let channel: MessageChannel | null = null;
const waiting: Wake[] = [];

/**
 * A promise that resolves in a new task, after the tasks already queued (timers that are due,
 * input, worker messages) have run. A MessageChannel message: unlike setTimeout(0) it is not
 * clamped to 4 ms when nested, and unlike scheduler.yield() its continuation does not jump ahead
 * of the tasks it yields to. Node (the unit tests) uses setImmediate; an open MessagePort would
 * keep its process alive.
 */
export function nextTask(): Promise<void> {
  const immediate = (globalThis as { setImmediate?: (f: Wake) => void }).setImmediate;
  if (immediate) return new Promise((resolve) => immediate(resolve));
  if (typeof MessageChannel === "undefined") return new Promise((resolve) => setTimeout(resolve, 0));
  if (!channel) {
    channel = new MessageChannel();
    channel.port1.onmessage = () => waiting.shift()?.();
  }
  const port = channel.port2;
  return new Promise((resolve) => {
    waiting.push(resolve);
    port.postMessage(null);
  });
}

/** Turns given at most every `intervalMs` (0: at every call; Infinity: never). */
export class EventLoopTurns {
  private last = performance.now();
  /** Turns given so far. */
  given = 0;

  constructor(private readonly intervalMs: number) {}

  /** Give the event loop a turn when `intervalMs` have passed since the last one. */
  async give(): Promise<void> {
    if (performance.now() - this.last < this.intervalMs) return;
    await nextTask();
    this.given++;
    this.last = performance.now();
  }
}
