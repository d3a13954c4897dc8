// What the probes share: state learnt from a component's signals as they
// happen, and waits for a condition on it, checked now and after every
// signal (graphile-worker's EventMonitor, River's testsignal). No polling.

export abstract class Probe {
  private readonly checks = new Set<() => void>();

  /** Resolves with the milliseconds it took once `ok()` holds, checked now and after every signal; rejects after `ms`. */
  until(ok: () => boolean, what: string, ms = 15_000): Promise<number> {
    const started = Date.now();
    if (ok()) return Promise.resolve(0);
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.checks.delete(check);
        reject(new Error(`${what}: not within ${ms} ms`));
      }, ms);
      const check = () => {
        if (!ok()) return;
        clearTimeout(timer);
        this.checks.delete(check);
        resolve(Date.now() - started);
      };
      this.checks.add(check);
    });
  }

  /** Applies what a signal says, then checks every wait. */
  protected note(update: () => void): void {
    update();
    for (const check of [...this.checks]) check();
  }
}
