// The test kit's one sleep. A test lets time pass only to show that
// something does *not* happen in it (no event arrives, nothing is written),
// or to pace a client the way a real one would (a leader renewing every
// ttl/3, a reader slower than the server): never to wait for something to
// happen, which is a signal's job (or eventually()'s). Each caller names the
// period in a constant and says why in `why`, which also names the wait in a
// stack trace.

/** Lets `ms` pass; `why` says what the period proves or paces. */
export async function quietPeriod(ms: number, why: string): Promise<void> {
  if (!why) throw new Error("a quiet period says why it is there");
  await new Promise((r) => setTimeout(r, ms));
}
