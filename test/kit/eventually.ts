// The test kit's one way to wait for a condition that no event announces
// (a socket closed by the server, a count read from the database, a child's
// output): polled every POLL_MS, failing with `what` once `withinMs` has
// passed. Prefer a signal where there is one: the hub's (watchProbe.ts), the
// connection listener's (connectionProbe.ts), health's "change". Given a
// promise instead of a condition, it bounds the wait for it the same way.

/** How often a condition is checked: often enough that a wait ends promptly, rarely enough to cost nothing. */
const POLL_MS = 20;

type What = string | (() => string);
const describe = (what: What) => (typeof what === "string" ? what : what());

/** Resolves with the milliseconds it took once `cond` holds (checked now, then every 20 ms); rejects after `withinMs`. */
export function eventually(cond: () => boolean | Promise<boolean>, withinMs: number, what: What): Promise<number>;
/** Resolves as `p` does; rejects naming `what` if it has not settled within `withinMs`. */
export function eventually<T>(p: PromiseLike<T>, withinMs: number, what: What): Promise<T>;
export function eventually<T>(c: (() => boolean | Promise<boolean>) | PromiseLike<T>, withinMs: number, what: What): Promise<number | T> {
  return typeof c === "function" ? poll(c, withinMs, what) : bound(c, withinMs, what);
}

async function poll(cond: () => boolean | Promise<boolean>, withinMs: number, what: What): Promise<number> {
  const started = Date.now();
  while (!(await cond())) {
    if (Date.now() - started > withinMs) throw new Error(`${describe(what)} not within ${withinMs} ms`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  return Date.now() - started;
}

async function bound<T>(p: PromiseLike<T>, withinMs: number, what: What): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${describe(what)} not within ${withinMs} ms`)), withinMs)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}
