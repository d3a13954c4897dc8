// A clock tests move by hand (Temporal's EventTimeSource, River's stubbed
// time): lease expiry without waiting for it. Until advanced it is the
// database's clock, as in production; advance(ms) jumps every lease
// statement and in-process wait (WatchLeader's expiry wake-up, the design
// cache) forward by ms at once.
import type { Clock } from "../src/core/clock.js";

interface Sleeper {
  due: number;
  timer: NodeJS.Timeout;
  resolve(): void;
}

export class TestClock implements Clock {
  private offsetMs = 0;
  private readonly sleepers = new Set<Sleeper>();

  sqlNow(): Date | undefined {
    return this.offsetMs === 0 ? undefined : new Date(this.nowMs());
  }

  nowMs(): number {
    return Date.now() + this.offsetMs;
  }

  sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const sleeper: Sleeper = {
        due: this.nowMs() + ms,
        timer: setTimeout(() => done(), ms),
        resolve: () => done(),
      };
      const done = () => {
        clearTimeout(sleeper.timer);
        this.sleepers.delete(sleeper);
        signal.removeEventListener("abort", onAbort);
        resolve();
      };
      const onAbort = () => {
        clearTimeout(sleeper.timer);
        this.sleepers.delete(sleeper);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.sleepers.add(sleeper);
    });
  }

  /** Moves the clock forward; waits now due end at once, the others are re-armed. */
  advance(ms: number): void {
    this.offsetMs += ms;
    const now = this.nowMs();
    for (const sleeper of [...this.sleepers]) {
      if (sleeper.due <= now) sleeper.resolve();
      else {
        clearTimeout(sleeper.timer);
        sleeper.timer = setTimeout(() => sleeper.resolve(), sleeper.due - now);
      }
    }
  }

  /** Back to the database's clock (between tests: each uses elections of its own). */
  reset(): void {
    this.offsetMs = 0;
  }
}
