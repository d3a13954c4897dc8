// The test kit's one way to wait for a condition that no event announces
// (a socket closed by the server, a count read from outside): polled every
// 20 ms, failing with `what` once `withinMs` has passed. Prefer a signal
// (watchProbe.ts, the hub's and the listener's events) where there is one.

/** Resolves with the milliseconds it took once `cond` holds; rejects after `withinMs`. */
export async function eventually(cond: () => boolean, withinMs: number, what: string): Promise<number> {
  const started = Date.now();
  while (!cond()) {
    if (Date.now() - started > withinMs) throw new Error(`${what} not within ${withinMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return Date.now() - started;
}
