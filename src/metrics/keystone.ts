// Whether Keystone answers the validation of callers' tokens: the same
// probe as health's `keystone` entry, read at scrape time.
import { Gauge, type Registry } from "prom-client";

export class KeystoneMetrics {
  /** Keystone's origin and whether it answers, once observe was called. */
  private keystone: { endpoint: string; up: () => boolean } | undefined;

  constructor(registry: Registry) {
    const keystone = () => this.keystone;
    new Gauge({
      name: "statemgmt_keystone_up",
      help: "1 while Keystone answers token validations, 0 while it does not (absent without Keystone validation).",
      labelNames: ["endpoint"],
      registers: [registry],
      collect: function () {
        this.reset();
        const k = keystone();
        if (k) this.set({ endpoint: k.endpoint }, k.up() ? 1 : 0);
      },
    });
  }

  /** Reports Keystone's health in statemgmt_keystone_up (endpoint: its origin). */
  observe(endpoint: string, up: () => boolean): void {
    this.keystone = { endpoint, up };
  }
}
