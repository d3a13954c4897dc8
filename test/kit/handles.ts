// What keeps the event loop alive: the handles and timers Node reports
// (process.getActiveResourcesInfo()), counted by kind. The root hooks
// (test/setup.ts) check that each test file leaves none behind.

/** Counts of the handles and timers keeping the event loop alive, by kind. */
export function activeResources(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) out[kind] = (out[kind] ?? 0) + 1;
  return out;
}

/** What `now` holds beyond `before`, by kind ("TCPSocketWrap ×2"); empty when nothing. */
export function beyond(before: Record<string, number>, now: Record<string, number>): string[] {
  return Object.entries(now)
    .filter(([kind, n]) => n > (before[kind] ?? 0))
    .map(([kind, n]) => `${kind} ×${n - (before[kind] ?? 0)}`);
}
