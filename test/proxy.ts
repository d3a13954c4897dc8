// A TCP forwarder for fault injection between the server and PostgreSQL.
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";

/** A TCP forwarder that can refuse and drop connections on demand. */
export class TcpProxy {
  private readonly sockets = new Set<Socket>();
  private open = true;
  /** Connections accepted so far. */
  accepted = 0;
  /** Delay before a new connection is forwarded: a slow connection set-up. */
  connectDelayMs = 0;
  /** Delay of every chunk from the server to the client: a slow network or a busy database. */
  latencyMs = 0;
  /**
   * While true, new connections are accepted and never answered, as a
   * stopping PostgreSQL leaves the connections in its listen backlog.
   */
  blackhole = false;
  /** Connections held unanswered so far; `onBlackholed` is told of each. */
  blackholed = 0;
  onBlackholed: (() => void) | undefined;
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(host: string, port: number): Promise<TcpProxy> {
    let proxy!: TcpProxy;
    const server = createServer((client) => {
      if (!proxy.open) return void client.destroy();
      if (proxy.blackhole) {
        proxy.sockets.add(client);
        client.on("close", () => proxy.sockets.delete(client));
        client.on("error", () => {});
        client.pause();
        proxy.blackholed++;
        proxy.onBlackholed?.();
        return;
      }
      proxy.accepted++;
      if (proxy.connectDelayMs > 0) client.pause();
      const upstream = netConnect(port, host);
      for (const s of [client, upstream]) {
        proxy.sockets.add(s);
        s.on("close", () => proxy.sockets.delete(s));
        s.on("error", () => {});
      }
      const forward = () => {
        client.pipe(upstream);
        upstream.on("data", (chunk: Buffer) => {
          if (proxy.latencyMs > 0) setTimeout(() => client.write(chunk), proxy.latencyMs);
          else client.write(chunk);
        });
      };
      if (proxy.connectDelayMs > 0) setTimeout(forward, proxy.connectDelayMs);
      else forward();
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    proxy = new TcpProxy(server, (server.address() as { port: number }).port);
    return proxy;
  }

  /** Drops every connection and refuses new ones. */
  cut(): void {
    this.open = false;
    for (const s of this.sockets) s.destroy();
  }

  resume(): void {
    this.open = true;
  }

  /** Stops forwarding on the open connections without closing them: a silent hang. */
  stall(): void {
    for (const s of this.sockets) {
      s.unpipe();
      s.pause();
    }
  }

  get connections(): number {
    return this.sockets.size / 2;
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((r) => this.server.close(() => r()));
  }
}
