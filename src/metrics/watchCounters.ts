// What the watch path and the leadership RPCs count for metrics, without
// depending on prom-client (watches.ts implements these; tests and servers
// without metrics get the no-op versions).

/** Why a watch stream ended (the `reason` label of statemgmt_watch_streams_ended_total). */
export type StreamEndReason =
  | "fell_behind" // RESOURCE_EXHAUSTED WATCH_BUFFER_FULL
  | "task_finished" // a WatchTask stream's task finished and the linger is over
  | "task_deleted"
  | "cancelled" // the client cancelled or went away
  | "deadline"
  | "connection_max_age" // UNAVAILABLE CONNECTION_MAX_AGE
  | "shutdown"
  | "error";

export type WatchKind = "task" | "tasks" | "leader";

export type NotificationChannel = "tasks" | "leases" | "heartbeat";

export interface WatchCounters {
  /** The LISTEN connection listened again after its first time. */
  listenReconnected(): void;
  /** A heartbeat went unheard and the LISTEN connection was replaced. */
  heartbeatReplaced(): void;
  notificationReceived(channel: NotificationChannel): void;
  /** One shared read by a task's feed or the WatchTasks reader (whatever its number of watchers). */
  feedRead(): void;
  streamEnded(kind: WatchKind, reason: StreamEndReason): void;
}

export interface ElectionCounters {
  /** A claim found the previous term lapsed (neither renewed nor resigned in time). */
  leaseExpired(): void;
  /** A claim began a term over another holder's lapsed lease. */
  takeover(): void;
}

export const NO_WATCH_COUNTERS: WatchCounters = {
  listenReconnected: () => {},
  heartbeatReplaced: () => {},
  notificationReceived: () => {},
  feedRead: () => {},
  streamEnded: () => {},
};

export const NO_ELECTION_COUNTERS: ElectionCounters = { leaseExpired: () => {}, takeover: () => {} };
