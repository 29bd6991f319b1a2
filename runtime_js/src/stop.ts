// Streaming stop-string matcher. Feed text deltas as they are decoded; get back the text that is
// safe to show now. Text that could be the start of a stop string is held back until it is
// resolved; a stop string itself (and anything after it) is never emitted.

export interface StopResult {
  /** Text safe to emit now. */
  text: string;
  /** True once a stop string has been seen; later pushes return "". */
  stopped: boolean;
  /** The stop string that matched, when stopped. */
  matched?: string | undefined;
}

export class StopMatcher {
  private readonly stops: string[];
  private held = "";
  private done = false;
  private matchedStop: string | undefined;

  constructor(stops: Iterable<string>) {
    this.stops = [...new Set(stops)].filter((s) => s.length > 0);
  }

  get stopped(): boolean {
    return this.done;
  }

  push(delta: string): StopResult {
    if (this.done) return { text: "", stopped: true, matched: this.matchedStop };
    const buf = this.held + delta;
    if (this.stops.length === 0) return { text: buf, stopped: false };
    // earliest stop occurrence; ties (same start) go to the longest stop string
    let at = -1, which = "";
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (at < 0 || i < at || (i === at && s.length > which.length))) { at = i; which = s; }
    }
    if (at >= 0) {
      this.done = true;
      this.matchedStop = which;
      this.held = "";
      return { text: buf.slice(0, at), stopped: true, matched: which };
    }
    const keep = this.partialSuffix(buf);
    this.held = buf.slice(buf.length - keep);
    return { text: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** End of generation: release the held-back text (it did not turn into a stop string). */
  flush(): string {
    if (this.done) return "";
    const rest = this.held;
    this.held = "";
    return rest;
  }

  /** Length of the longest suffix of buf that is a proper prefix of some stop string. */
  private partialSuffix(buf: string): number {
    let best = 0;
    for (const s of this.stops) {
      for (let len = Math.min(s.length - 1, buf.length); len > best; len--) {
        if (buf.endsWith(s.slice(0, len))) { best = len; break; }
      }
    }
    return best;
  }
}
