// What a test knows of the server's watch feeds, learnt from the hub's
// signals (src/watch/signals.ts) as they happen: no getters, no polling.
// Attach it before the streams it observes start.
import type { WatchHub } from "../../src/watch/hub.js";
import { Probe } from "./probe.js";

export class WatchProbe extends Probe {
  /** Subscribers per task's feed, as last signalled. */
  private readonly subscriberCounts = new Map<string, number>();
  /** Calls waiting for a task's feed to open. */
  private readonly waitingCounts = new Map<string, number>();
  /** Task ids whose feed was closed, in order. */
  readonly closedFeeds: string[] = [];
  /** Task ids whose feed is open or opening. */
  private readonly live = new Set<string>();

  constructor(readonly hub: WatchHub) {
    super();
    hub.on("subscribed", (taskId, n) =>
      this.note(() => {
        this.subscriberCounts.set(taskId, n);
        this.live.add(taskId);
      }),
    );
    hub.on("unsubscribed", (taskId, n) => this.note(() => this.subscriberCounts.set(taskId, n)));
    hub.on("feedWaiting", (taskId, n) =>
      this.note(() => {
        this.waitingCounts.set(taskId, n);
        this.live.add(taskId);
      }),
    );
    hub.on("feedWaitEnded", (taskId, n) => this.note(() => this.waitingCounts.set(taskId, n)));
    hub.on("feedClosed", (taskId) =>
      this.note(() => {
        this.closedFeeds.push(taskId);
        this.live.delete(taskId);
      }),
    );
    hub.on("listening", () => this.note(() => {}));
    hub.on("heartbeat", () => this.note(() => {}));
  }

  subscribers(taskId: string): number {
    return this.subscriberCounts.get(taskId) ?? 0;
  }

  waiting(taskId: string): number {
    return this.waitingCounts.get(taskId) ?? 0;
  }

  /** Feeds open or opening. */
  get feeds(): number {
    return this.live.size;
  }

  /** Resolves once the task's feed has at least `n` subscribers. */
  async watchers(taskId: string, n = 1): Promise<void> {
    await this.until(() => this.subscribers(taskId) >= n, `${n} watchers of ${taskId}`);
  }
}
