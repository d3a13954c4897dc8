// What a test knows of the server's connections and calls, learnt from the
// connection listener's signals (src/server/connections.ts) as they happen.
// Attach it before the connections it observes open (the harness does).
import type { EventEmitter } from "node:events";
import type { ConnectionSignals } from "../../src/server/connections.js";
import { Probe } from "./probe.js";

export class ConnectionProbe extends Probe {
  /** Connections open (handshaking or serving), as last signalled. */
  open = 0;
  /** Open connections that have not vouched for themselves. */
  strangers = 0;
  /** Calls in progress on all connections (unary and streaming). */
  calls = 0;
  /** Strangers closed to make room, connections refused at accept, and closed for a missing HTTP/2 preface: so far. */
  readonly refused = { evicted: 0, overLimit: 0, handshake: 0 };

  constructor(listener: EventEmitter<ConnectionSignals>) {
    super();
    const counts = (open: number, strangers: number) =>
      this.note(() => {
        this.open = open;
        this.strangers = strangers;
      });
    listener.on("opened", counts);
    listener.on("closed", counts);
    listener.on("vouched", (strangers) => this.note(() => (this.strangers = strangers)));
    listener.on("evicted", (n) => this.note(() => (this.refused.evicted = n)));
    listener.on("refused", (n) => this.note(() => (this.refused.overLimit = n)));
    listener.on("handshakeTimedOut", (n) => this.note(() => (this.refused.handshake = n)));
    listener.on("callStarted", (n) => this.note(() => (this.calls = n)));
    listener.on("callEnded", (n) => this.note(() => (this.calls = n)));
  }
}
