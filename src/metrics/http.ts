// The HTTP listener for Prometheus and for probes that speak HTTP:
// GET /metrics, /healthz (the process is up), /readyz (200 only while the
// gRPC health status is SERVING).
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "../core/log.js";
import type { Metrics } from "./registry.js";

export interface MetricsServer {
  /** host:port bound (port 0 resolved). */
  address: string;
  close(): Promise<void>;
}

export async function startMetricsServer(o: { host: string; port: number; metrics: Metrics; ready: () => boolean; log: Logger }): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (path === "/metrics") {
      o.metrics.render().then(
        (text) => res.writeHead(200, { "content-type": o.metrics.contentType }).end(text),
        (err: unknown) => {
          o.log.error({ err }, "metrics collection failed");
          res.writeHead(500, { "content-type": "text/plain" }).end("metrics collection failed\n");
        },
      );
    } else if (path === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    } else if (path === "/readyz") {
      const ok = o.ready();
      res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" }).end(ok ? "ready\n" : "not ready: the database does not answer\n");
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: /metrics, /healthz, /readyz\n");
    }
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: o.host, port: o.port }, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const host = o.host.includes(":") ? `[${o.host}]` : o.host;
  return {
    address: `${host}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
