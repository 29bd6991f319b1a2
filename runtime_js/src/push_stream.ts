// An async iterable fed by a producer running alongside: push items, then end (or fail) once.

/**
 * Turn a producer that calls `push(item)` and settles a promise into an AsyncIterable: items
 * come out in order; after the promise settles the iteration ends, or throws its error.
 */
export function pushStream<T>(produce: (push: (item: T) => void) => Promise<unknown>): AsyncIterable<T> {
  const queue: T[] = [];
  let wake: (() => void) | null = null;
  let finished = false;
  let failed = false;
  let failure: unknown;
  produce((item) => { queue.push(item); wake?.(); })
    .catch((err: unknown) => { failed = true; failure = err; })
    .finally(() => { finished = true; wake?.(); });
  return {
    [Symbol.asyncIterator]: () => ({
      async next(): Promise<IteratorResult<T>> {
        while (!queue.length && !finished) await new Promise<void>((resolve) => { wake = resolve; });
        wake = null;
        if (queue.length) return { value: queue.shift()!, done: false };
        if (failed) throw failure;
        return { value: undefined, done: true };
      },
    }),
  };
}
