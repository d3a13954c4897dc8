// What the watch parts announce as they work: the hub is an EventEmitter of
// these. Tests await them (River's testsignal, graphile-worker's
// EventMonitor) instead of polling; in production only "lease" has a
// listener (WatchLeader), and emitting to no listener costs a map lookup.

export interface WatchSignals {
  /** The LISTEN connection listens (again): `reconnect` is false the first time. */
  listening: [reconnect: boolean];
  /** A heartbeat was sent; its timeout runs from now. */
  heartbeatSent: [];
  /** A heartbeat came back over the LISTEN connection. */
  heartbeat: [];
  /** The LISTEN connection is being replaced (it closed, or a heartbeat went unheard). */
  replacing: [reason: string];
  /** A lease changed: the election's name, or "*" after a reconnect (any may have). */
  lease: [election: string];
  /** A WatchTask call waits for its task's feed to open; `waiting` counts them. */
  feedWaiting: [taskId: string, waiting: number];
  /** A WatchTask call stopped waiting (it left, or the feed opened or failed). */
  feedWaitEnded: [taskId: string, waiting: number];
  /** A stream subscribed to a task's feed; `subscribers` counts them now. */
  subscribed: [taskId: string, subscribers: number];
  unsubscribed: [taskId: string, subscribers: number];
  /** A feed was closed (no subscriber left, it opened for nobody, or its opening failed). */
  feedClosed: [taskId: string];
  /** A shared read failed and waits for the retry timer. */
  readFailed: [what: string];
}
