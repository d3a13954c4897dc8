// The server's TCP listener: accepts connections itself and hands them to
// grpc-js (Server.createConnectionInjector), so that it can refuse what
// grpc-js alone would keep forever:
//   - connections beyond maxConnections make room by closing the oldest
//     connection that has not vouched for itself (see "Vouching" below), and
//     are closed at accept only when every open connection has;
//   - a plaintext connection must send the HTTP/2 client preface within
//     handshakeTimeoutMs (grpc-js starts its idle and age timers only once a
//     session is up, so a socket that never spoke was never closed);
//   - a connection without calls for idleTimeoutMs + IDLE_FORCE_MS is
//     destroyed: grpc-js closes it at idleTimeoutMs, but only gracefully
//     (GOAWAY), which a peer that never answers ignores.
// grpc-js enforces the idle timeout, the maximum age (GOAWAY, then a grace
// period) and the per-connection stream limit (server options below).
//
// Vouching. A connection vouches for itself with its first call that an
// authenticated caller makes (or any caller, when the server runs without
// authentication), or a key-authorized call that succeeds (a node's valid
// identity key). Until then it is a stranger: what anyone who reaches the port
// can hold without a credential. Strangers are closed first when the slots run
// out, oldest first, so an authenticated client can always connect however
// many strangers hold connections; and a stranger's refused calls do not
// count as activity, so one that only makes refused calls is closed
// idleTimeoutMs after it opened, whatever grpc-js's idle timer says.
//
// The listener is an EventEmitter of ConnectionSignals, as the watch hub is
// of WatchSignals: tests await them instead of polling counts.
import { EventEmitter } from "node:events";
import net from "node:net";
import type * as grpc from "@grpc/grpc-js";
import type { Logger } from "../core/log.js";

export interface ConnectionLimits {
  /** Open connections at most; beyond, the oldest stranger is closed to make room (or, with none, the new one). */
  maxConnections: number;
  /** Time a new connection has to send the HTTP/2 client preface. */
  handshakeTimeoutMs: number;
  /** A connection without calls this long is closed (GOAWAY). */
  idleTimeoutMs: number;
  /** A connection is asked to go away (GOAWAY) at about this age (grpc-js adds ±10 % jitter). */
  maxAgeMs: number;
  /** Then its calls get this long to finish before it is closed; streams are ended cleanly before that. */
  ageGraceMs: number;
  /** Concurrent calls (HTTP/2 streams) on one connection (SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxStreamsPerConnection: number;
  /** StateService streaming calls (watches) open at once on the whole server; beyond, RESOURCE_EXHAUSTED. */
  maxStreams: number;
  /** Health Watch streams open at once (open to anyone: a budget of their own, never the StateService's). */
  maxHealthStreams: number;
  /** Server reflection streams open at once (a budget of their own). */
  maxReflectionStreams: number;
}

/** Defaults for a site of thousands of nodes served by a few orchestrators, tools and operators. */
export const DEFAULT_LIMITS: ConnectionLimits = {
  maxConnections: 4096,
  handshakeTimeoutMs: 10_000,
  idleTimeoutMs: 300_000,
  maxAgeMs: 3_600_000,
  ageGraceMs: 900_000,
  maxStreamsPerConnection: 1000,
  maxStreams: 20_000,
  // Health Watch is what gRPC clients' own health checking opens, one per
  // connection to the server: a few per orchestrator, tool or proxy.
  maxHealthStreams: 1000,
  // Reflection streams are grpcurl and similar tools, one per command.
  maxReflectionStreams: 100,
};

/** The grpc.Server options that carry the limits grpc-js enforces itself. */
export function grpcServerOptions(l: ConnectionLimits): grpc.ServerOptions {
  return {
    "grpc.max_connection_idle_ms": l.idleTimeoutMs,
    "grpc.max_connection_age_ms": l.maxAgeMs,
    "grpc.max_connection_age_grace_ms": l.ageGraceMs,
    "grpc.max_concurrent_streams": l.maxStreamsPerConnection,
  };
}

/**
 * Problems with a set of limits, for configuration errors. Streams are
 * ended at the latest GOAWAY time (1.1 × maxAgeMs); the earliest forced close
 * is 0.9 × maxAgeMs + ageGraceMs, which must come after it.
 */
export function limitsProblem(l: ConnectionLimits): string | undefined {
  if (l.ageGraceMs <= 0.2 * l.maxAgeMs + 1000) {
    return `the connection age grace (${l.ageGraceMs} ms) must exceed a fifth of the maximum age (${l.maxAgeMs} ms) plus 1 s, so that streams end cleanly between the GOAWAY and the forced close`;
  }
  return undefined;
}

/** How long after grpc-js's graceful idle close a connection still open is destroyed. */
const IDLE_FORCE_MS = 1000;

interface Connection {
  socket: net.Socket;
  acceptedAt: number;
  /** Calls in progress. */
  active: number;
  /** When the last call ended (or the connection opened); a stranger's refused calls do not count. */
  idleSince: number;
  /** A call on it was authenticated (or a node's key accepted): see "Vouching". */
  vouched: boolean;
}

/**
 * What the listener announces as connections come and go, each with the
 * counts after the change. Tests await them (River's testsignal); in
 * production nothing listens, and emitting to no listener costs a map lookup.
 */
export interface ConnectionSignals {
  /** A connection was accepted: `open` connections now (handshaking or serving), `strangers` of them not vouched for. */
  opened: [open: number, strangers: number];
  /** A connection vouched for itself (see "Vouching"): `strangers` left. */
  vouched: [strangers: number];
  /** A connection closed, whoever closed it and why. */
  closed: [open: number, strangers: number];
  /** The oldest stranger was closed to make room for a new connection: `evicted` so far. */
  evicted: [evicted: number];
  /** A new connection was refused at accept (at the limit, every connection vouched for): `overLimit` so far. */
  refused: [overLimit: number];
  /** A connection was closed for not sending the HTTP/2 preface in time: `handshake` so far. */
  handshakeTimedOut: [handshake: number];
  /** A call started: `calls` in progress on all connections now (unary and streaming, admitted or not yet). */
  callStarted: [calls: number];
  /** A call ended: `calls` still in progress on all connections. */
  callEnded: [calls: number];
}

/** HTTP/2 client connection preface (RFC 9113 §3.4). */
const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export class ConnectionListener extends EventEmitter<ConnectionSignals> {
  private readonly tcp: net.Server;
  private readonly connections = new Map<string, Connection>();
  private readonly sweeper: NodeJS.Timeout;
  /** Connections that have not vouched for themselves, oldest first (Map keeps insertion order). */
  private readonly strangers = new Map<string, Connection>();
  private readonly handshaking = new Set<net.Socket>();
  /**
   * Connections refused at accept (over the limit with no stranger to close),
   * strangers closed to make room, and connections closed for not speaking
   * HTTP/2 in time.
   */
  readonly refused = { overLimit: 0, evicted: 0, handshake: 0 };
  /** Log lines about the limit at most once a second: under attack they would come by the thousand. */
  private lastLimitLog = 0;
  /** Calls in progress on all connections. */
  private calls = 0;

  constructor(
    private readonly injector: grpc.ConnectionInjector,
    private readonly limits: ConnectionLimits,
    private readonly log: Logger,
    /** The injector's credentials are TLS: connections are handed over unread. */
    private readonly tls = false,
  ) {
    super();
    this.tcp = net.createServer({ noDelay: true }, (socket) => this.onConnection(socket));
    this.sweeper = setInterval(() => this.sweep(), Math.min(1000, limits.idleTimeoutMs / 2));
    this.sweeper.unref();
  }

  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.tcp.once("error", reject);
      this.tcp.listen({ host, port, exclusive: true }, () => {
        this.tcp.removeListener("error", reject);
        resolve((this.tcp.address() as net.AddressInfo).port);
      });
    });
  }

  /** A call started on the connection of `peer` (grpc-js's getPeer()). */
  callStarted(peer: string): void {
    const c = this.connections.get(peer);
    if (c) c.active++;
    this.emit("callStarted", ++this.calls);
  }

  /** A call on the connection of `peer` was authenticated, or a node's key accepted: the connection is no stranger. */
  vouch(peer: string): void {
    const c = this.connections.get(peer);
    if (c && !c.vouched) {
      c.vouched = true;
      this.strangers.delete(peer);
      this.emit("vouched", this.strangers.size);
    }
  }

  callEnded(peer: string): void {
    const c = this.connections.get(peer);
    if (c && --c.active === 0 && c.vouched) c.idleSince = Date.now();
    this.emit("callEnded", --this.calls);
  }

  /**
   * When a stream on the connection of `peer` (as grpc-js's getPeer() names
   * it) must end: after the latest time grpc-js may send that connection its
   * GOAWAY, before the earliest forced close.
   */
  streamEndsAt(peer: string): number | undefined {
    const c = this.connections.get(peer);
    return c === undefined ? undefined : c.acceptedAt + 1.1 * this.limits.maxAgeMs;
  }

  /**
   * Stops accepting and drops connections still in their handshake; the
   * others are grpc-js's to close (Server.tryShutdown / forceShutdown).
   */
  close(): void {
    clearInterval(this.sweeper);
    if (this.tcp.listening) this.tcp.close();
    for (const s of this.handshaking) s.destroy();
  }

  private onConnection(socket: net.Socket): void {
    socket.on("error", () => {}); // grpc-js and the close below handle it
    if (this.connections.size >= this.limits.maxConnections && !this.makeRoom()) {
      this.refused.overLimit++;
      socket.destroy();
      this.emit("refused", this.refused.overLimit);
      return;
    }
    const peer = peerName(socket);
    const now = Date.now();
    const c: Connection = { socket, acceptedAt: now, active: 0, idleSince: now, vouched: false };
    this.connections.set(peer, c);
    this.strangers.set(peer, c);
    socket.once("close", () => {
      if (this.connections.get(peer) === c) this.connections.delete(peer);
      if (this.strangers.get(peer) === c) this.strangers.delete(peer);
      this.emit("closed", this.connections.size, this.strangers.size);
    });
    this.emit("opened", this.connections.size, this.strangers.size);
    this.handshaking.add(socket);
    const timer = setTimeout(() => {
      this.refused.handshake++;
      socket.destroy();
      this.emit("handshakeTimedOut", this.refused.handshake);
    }, this.limits.handshakeTimeoutMs);
    timer.unref();
    socket.once("close", () => {
      clearTimeout(timer);
      this.handshaking.delete(socket);
    });
    const inject = () => {
      clearTimeout(timer);
      this.handshaking.delete(socket);
      this.injector.injectConnection(socket);
    };
    // With TLS, grpc-js's TLS server takes the connection as it is (a byte
    // read here could not be given back to it); Node bounds its TLS handshake
    // (120 s) and the idle timeout what follows.
    if (this.tls) inject();
    else awaitPreface(socket, inject);
  }

  /**
   * Closes the oldest stranger to make room for a new connection; false when
   * every open connection has vouched for itself (the new one is refused).
   */
  private makeRoom(): boolean {
    const oldest = this.strangers.entries().next();
    const now = Date.now();
    const logNow = now - this.lastLimitLog >= 1000;
    if (logNow) this.lastLimitLog = now;
    if (oldest.done) {
      if (logNow) {
        this.log.warn(
          { limit: this.limits.maxConnections, refused: this.refused.overLimit + 1 },
          "connection refused: the server holds STATEMGMT_MAX_CONNECTIONS connections, all of them authenticated",
        );
      }
      return false;
    }
    const [peer, c] = oldest.value;
    // Out of both maps now, so that a burst of new connections closes a new stranger each.
    this.strangers.delete(peer);
    this.connections.delete(peer);
    c.socket.destroy();
    this.refused.evicted++;
    this.emit("evicted", this.refused.evicted);
    if (logNow) {
      this.log.warn(
        { limit: this.limits.maxConnections, evicted: this.refused.evicted, strangers: this.strangers.size },
        "at STATEMGMT_MAX_CONNECTIONS: closing the oldest connections that have not authenticated a call to make room",
      );
    }
    return true;
  }

  private sweep(): void {
    const cutoff = Date.now() - this.limits.idleTimeoutMs - IDLE_FORCE_MS;
    for (const c of this.connections.values()) {
      if (c.active === 0 && c.idleSince < cutoff) c.socket.destroy();
    }
  }
}

/**
 * Calls `ready` once `stream` has sent the HTTP/2 client preface, with the
 * bytes read put back for the HTTP/2 session; destroys a stream that sends
 * anything else (HTTP/1.1, or TLS to a plaintext port).
 */
function awaitPreface(stream: net.Socket, ready: () => void): void {
  let head = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    head = Buffer.concat([head, chunk]);
    const n = Math.min(head.length, PREFACE.length);
    if (!head.subarray(0, n).equals(PREFACE.subarray(0, n))) {
      stream.destroy();
      return;
    }
    if (head.length < PREFACE.length) return;
    stream.removeListener("data", onData);
    stream.pause();
    // Node's HTTP/2 session reads what is already buffered on the socket.
    stream.unshift(head);
    ready();
  };
  stream.on("data", onData);
}

/** The peer name grpc-js gives calls on this socket (call.getPeer()). */
function peerName(socket: net.Socket): string {
  return socket.remotePort ? `${socket.remoteAddress}:${socket.remotePort}` : String(socket.remoteAddress);
}
