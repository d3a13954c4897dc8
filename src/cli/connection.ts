// The connection the global options describe: server address, TLS files,
// bearer token and the deadline of each unary call.
import * as grpc from "@grpc/grpc-js";
import { StateService } from "../../gen/drydock/statemgmt/v1/state_service_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { createClient, tlsCredentials, type Client } from "../client/client.js";
import type { StateClient } from "../client/stateClient.js";
import { CliError, EXIT } from "./exit.js";

export interface GlobalOptions {
  server: string;
  token?: string;
  cacert?: string;
  cert?: string;
  key?: string;
  tls?: boolean;
  /** Deadline of each unary call, milliseconds. */
  timeout: number;
  output?: string;
}

export interface Connection {
  state: StateClient;
  health(): Client<(typeof Health)["method"]>;
  /** Deadline of unary calls (watch streams have none). */
  deadlineMs: number;
  server: string;
  close(): void;
}

/**
 * Keepalive pings, so that a watch on a connection that died silently (a
 * dropped network path, not a closed socket) fails and resumes instead of
 * waiting forever; the server allows clients to ping this often.
 */
const CHANNEL_OPTIONS: grpc.ClientOptions = {
  "grpc.keepalive_time_ms": 20_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 0,
};

export function connect(o: GlobalOptions): Connection {
  if (!!o.cert !== !!o.key) throw new CliError("--cert and --key go together", EXIT.USAGE);
  const useTls = o.tls || !!o.cacert || !!o.cert;
  let creds: grpc.ChannelCredentials;
  try {
    creds = useTls ? tlsCredentials({ caFile: o.cacert, certFile: o.cert, keyFile: o.key }) : grpc.credentials.createInsecure();
  } catch (err) {
    throw new CliError(`cannot read TLS files: ${(err as Error).message}`, EXIT.USAGE);
  }
  const auth = { token: o.token || undefined };
  const state = createClient(StateService, o.server, creds, CHANNEL_OPTIONS, auth);
  let health: Client<(typeof Health)["method"]> | undefined;
  return {
    state,
    // The health service on the same channel options; created only by `health`.
    health: () => (health ??= createClient(Health, o.server, creds, CHANNEL_OPTIONS, auth)),
    deadlineMs: o.timeout,
    server: o.server,
    close() {
      state.close();
      health?.close();
    },
  };
}
