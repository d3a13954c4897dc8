// What the watch path and the elections do (issue 13's watch and lease
// part): counters the LISTEN connection, the feeds, the watch streams and
// the claims report through WatchCounters and ElectionCounters, and the
// elections' terms and holders, read at scrape time. The watch streams open
// and their events are counted with the calls (calls.ts).
import { Counter, Gauge, type Registry } from "prom-client";
import { MAX_ELECTION_SERIES, type MetricsScrape } from "../store/metrics.js";
import type { ElectionCounters, NotificationChannel, StreamEndReason, WatchCounters, WatchKind } from "./watchCounters.js";

/**
 * The `election` label of the elections past the first MAX_ELECTION_SERIES:
 * no election can be named so (election names match [A-Za-z0-9_.:-], so not
 * "_other", which could be one).
 */
export const OTHER_ELECTIONS = "(other)";

export class WatchMetrics implements WatchCounters, ElectionCounters {
  private readonly reconnects: Counter;
  private readonly replacements: Counter;
  private readonly notifications: Counter<"channel">;
  private readonly feedReads: Counter;
  private readonly ended: Counter<"kind" | "reason">;
  private readonly expiries: Counter;
  private readonly takeovers: Counter;

  constructor(registry: Registry, scrape: () => Promise<MetricsScrape | undefined>) {
    const registers = [registry];
    this.reconnects = new Counter({
      name: "statemgmt_watch_listen_reconnects_total",
      help: "Times the LISTEN connection listened again after its first connect (a close or a replacement).",
      registers,
    });
    this.replacements = new Counter({
      name: "statemgmt_watch_heartbeat_replacements_total",
      help: "LISTEN connections replaced because a heartbeat went unheard.",
      registers,
    });
    this.notifications = new Counter({
      name: "statemgmt_watch_notifications_total",
      help: "Notifications received on the LISTEN connection, by channel.",
      labelNames: ["channel"],
      registers,
    });
    this.feedReads = new Counter({
      name: "statemgmt_watch_feed_reads_total",
      help: "Shared reads of the watch feeds (one per wake-up of a task's feed, whatever its watchers, and one per WatchTasks read).",
      registers,
    });
    this.ended = new Counter({
      name: "statemgmt_watch_streams_ended_total",
      help: "Watch streams ended, by kind and reason.",
      labelNames: ["kind", "reason"],
      registers,
    });
    this.expiries = new Counter({
      name: "statemgmt_election_lease_expiries_total",
      help: "Leases found lapsed (neither renewed nor resigned in time) by the claim that began the next term.",
      registers,
    });
    this.takeovers = new Counter({
      name: "statemgmt_election_takeovers_total",
      help: "Terms begun over another holder's lapsed lease (failovers).",
      registers,
    });
    electionGauges(registers, scrape);
  }

  listenReconnected(): void {
    this.reconnects.inc();
  }

  heartbeatReplaced(): void {
    this.replacements.inc();
  }

  notificationReceived(channel: NotificationChannel): void {
    this.notifications.inc({ channel });
  }

  feedRead(): void {
    this.feedReads.inc();
  }

  streamEnded(kind: WatchKind, reason: StreamEndReason): void {
    this.ended.inc({ kind, reason });
  }

  leaseExpired(): void {
    this.expiries.inc();
  }

  takeover(): void {
    this.takeovers.inc();
  }
}

/** The elections' gauges, read by the scrape: the first MAX_ELECTION_SERIES have series of their own. */
function electionGauges(registers: Registry[], scrape: () => Promise<MetricsScrape | undefined>): void {
  new Gauge({
    name: "statemgmt_election_term",
    help: `Current term of each election with a live lease, among the first ${MAX_ELECTION_SERIES} elections (the default first, then by name).`,
    labelNames: ["election"],
    registers,
    collect: async function () {
      const s = await scrape();
      this.reset();
      for (const [election, term] of s?.electionTerms ?? []) this.set({ election }, Number(term));
    },
  });
  new Gauge({
    name: "statemgmt_election_held",
    help: `1 while some instance holds the election's lease, 0 once it lapsed or was resigned; the first ${MAX_ELECTION_SERIES} elections (the default first, then by name) have a series each, election="${OTHER_ELECTIONS}" counts the held leases of the rest.`,
    labelNames: ["election"],
    registers,
    collect: async function () {
      const s = await scrape();
      this.reset();
      for (const [election, held] of s?.electionsHeld ?? []) this.set({ election }, held ? 1 : 0);
      if (s && s.otherElections.count > 0) this.set({ election: OTHER_ELECTIONS }, s.otherElections.held);
    },
  });
}
