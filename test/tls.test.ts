// TLS and mutual TLS through the real server, certificate rotation without a
// restart, and the rule that keeps a plaintext server on loopback.
import { once } from "node:events";
import { mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { createClient, tlsCredentials } from "../src/client/client.js";
import { ConfigError, loadConfig } from "../src/config.js";
import { decodeError, useServer } from "./harness.js";
import { issue, makeCa, writePair, type Issued } from "./pki.js";

/** The status of one GetLeader call through these credentials (OK, or the failure's code name). */
async function callWith(address: string, creds: grpc.ChannelCredentials): Promise<string> {
  // By name, as the certificate says (an IP address as TLS server name is not allowed).
  const c = createClient(StateService, address.replace("127.0.0.1", "localhost"), creds, { "grpc.use_local_subchannel_pool": 1 });
  try {
    await c.getLeader({ election: "tls" }, { deadlineMs: 3000 });
    return "OK";
  } catch (err) {
    return grpc.status[decodeError(err).code]!;
  } finally {
    c.close();
  }
}

const dir = await mkdtemp(path.join(tmpdir(), "statemgmt-tls-"));
const ca = await makeCa("statemgmt test CA");
const otherCa = await makeCa("some other CA");
const files = {
  ca: path.join(dir, "ca.crt"),
  otherCa: path.join(dir, "other-ca.crt"),
  ...(await writePair(dir, "server", await issue(ca, "statemgmt", "server"))),
};
await writeFile(files.ca, ca.cert);
await writeFile(files.otherCa, otherCa.cert);
const client = await writePair(dir, "client", await issue(ca, "ops-cli", "client"));
const strangerClient = await writePair(dir, "stranger", await issue(otherCa, "ops-cli", "client"));
// The mutual TLS server's own pair (the TLS suite rotates the first one).
const mtlsServer = await writePair(dir, "server-mtls", await issue(ca, "statemgmt", "server"));
const mtlsIdentityServer = await writePair(dir, "server-ids", await issue(ca, "statemgmt", "server"));
// The client certificate's subject is the caller: an entry without sha256 gives it roles.
const tokensFile = path.join(dir, "tokens.json");
await writeFile(tokensFile, JSON.stringify({ identities: [{ subject: "CN=ops-cli", roles: ["operator"] }] }));

after(async () => rm(dir, { recursive: true, force: true }));

describe("TLS", () => {
  const h = useServer({ tls: { certFile: files.certFile, keyFile: files.keyFile } });

  it("serves clients that trust its CA; plaintext clients and clients trusting another CA cannot connect", async () => {
    expect(await callWith(h.server.address, tlsCredentials({ caFile: files.ca }))).to.equal("OK");
    expect(await callWith(h.server.address, grpc.credentials.createInsecure())).to.equal("UNAVAILABLE");
    expect(await callWith(h.server.address, tlsCredentials({ caFile: files.otherCa }))).to.equal("UNAVAILABLE");
  });

  it("takes a rotated certificate for new connections without a restart, and keeps the old one when the new pair is broken", async function () {
    this.timeout(20_000);
    const source = h.server.tls!;
    // Rotate to a certificate from another CA, the way tools do: write aside, rename over.
    const next = await issue(otherCa, "statemgmt", "server");
    const loaded = once(source, "loaded");
    await writeFile(`${files.certFile}.new`, next.cert);
    await writeFile(`${files.keyFile}.new`, next.key);
    await rename(`${files.keyFile}.new`, files.keyFile);
    await rename(`${files.certFile}.new`, files.certFile);
    await loaded;
    expect(await callWith(h.server.address, tlsCredentials({ caFile: files.otherCa }))).to.equal("OK");
    expect(await callWith(h.server.address, tlsCredentials({ caFile: files.ca }))).to.equal("UNAVAILABLE");

    // A key that does not fit the certificate: rejected, the current pair stays.
    const stray: Issued = await issue(ca, "statemgmt", "server");
    const rejected = once(source, "rejected");
    await writeFile(files.keyFile, stray.key);
    const [reason] = await rejected;
    expect(String(reason)).to.contain("does not fit");
    expect(await callWith(h.server.address, tlsCredentials({ caFile: files.otherCa }))).to.equal("OK");
  });
});

describe("mutual TLS", () => {
  const h = useServer({ tls: { ...mtlsServer, clientCaFile: files.ca } });

  it("requires a client certificate from the client CA", async () => {
    expect(await callWith(h.server.address, tlsCredentials({ caFile: files.ca, ...client }))).to.equal("OK");
    expect(await callWith(h.server.address, tlsCredentials({ caFile: files.ca }))).to.equal("UNAVAILABLE");
    expect(await callWith(h.server.address, tlsCredentials({ caFile: files.ca, ...strangerClient }))).to.equal("UNAVAILABLE");
  });
});

describe("mutual TLS identities", () => {
  const h = useServer({
    tls: { ...mtlsIdentityServer, clientCaFile: files.ca },
    tlsClientCa: files.ca,
    tlsClient: client,
    auth: { tokensFile, keystone: undefined, reflection: "open" },
  });

  it("takes the caller's identity and roles from its verified certificate", async () => {
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    expect(task!.createdBy).to.equal("CN=ops-cli");
    // An operator may not purge.
    const err = await h.client.purgeTasks({ olderThanDays: 1 }).then(
      () => null,
      (e: unknown) => decodeError(e),
    );
    expect(grpc.status[err!.code]).to.equal("PERMISSION_DENIED");
    expect(err!.errorInfo!.metadata.required_role).to.equal("admin");
  });
});

describe("listening beyond loopback", () => {
  const base = { STATEMGMT_DATA_DIR: dir };
  const refused = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
    try {
      loadConfig(argv, { ...base, ...env });
      return "";
    } catch (err) {
      expect(err).to.be.instanceOf(ConfigError);
      return (err as Error).message;
    }
  };

  it("is refused without TLS and authentication, with the way out in the message", () => {
    const msg = refused(["--listen", "0.0.0.0:50051"]);
    expect(msg).to.contain("refusing to serve 0.0.0.0:50051 beyond loopback");
    expect(msg).to.contain("--insecure");
    expect(refused(["--listen", "10.1.2.3:0", "--tls-cert", files.certFile, "--tls-key", files.keyFile])).to.contain("authentication");
    expect(refused(["--listen", "10.1.2.3:0"], { STATEMGMT_AUTH_TOKENS: "/etc/tokens.json" })).to.contain("TLS");
  });

  it("is allowed with TLS and authentication, or when the operator says --insecure; loopback always is", () => {
    expect(refused(["--listen", "0.0.0.0:0", "--tls-cert", files.certFile, "--tls-key", files.keyFile], { STATEMGMT_AUTH_TOKENS: "/etc/t.json" })).to.equal("");
    expect(refused(["--listen", "0.0.0.0:0", "--insecure"])).to.equal("");
    expect(refused(["--listen", "0.0.0.0:0"], { STATEMGMT_INSECURE: "1" })).to.equal("");
    for (const host of ["127.0.0.1", "127.9.9.9", "[::1]", "localhost"]) expect(refused(["--listen", `${host}:0`]), host).to.equal("");
  });

  it("refuses metrics beyond loopback (no TLS, no authentication) unless --insecure, whatever the gRPC port has", () => {
    const msg = refused(["--metrics-listen", "0.0.0.0:9464"]);
    expect(msg).to.contain("refusing to serve metrics on 0.0.0.0:9464 beyond loopback");
    expect(msg).to.contain("--insecure").and.contain("--metrics-listen");
    const secured = ["--tls-cert", files.certFile, "--tls-key", files.keyFile, "--listen", "0.0.0.0:0"];
    expect(refused([...secured, "--metrics-listen", "10.1.2.3:9464"], { STATEMGMT_AUTH_TOKENS: "/etc/t.json" })).to.contain("refusing to serve metrics");
    expect(refused([], { STATEMGMT_METRICS_LISTEN: "[::]:9464" })).to.contain("refusing to serve metrics on");
    expect(refused(["--metrics-listen", ":9464"])).to.contain("refusing to serve metrics on 0.0.0.0:9464"); // no host: every interface
    expect(refused(["--metrics-listen", "0.0.0.0:9464", "--insecure"])).to.equal("");
    expect(refused(["--metrics-listen", "0.0.0.0:9464"], { STATEMGMT_INSECURE: "1" })).to.equal("");
    for (const host of ["127.0.0.1", "[::1]", "localhost"]) expect(refused(["--metrics-listen", `${host}:0`]), host).to.equal("");
  });

  it("needs both halves of a TLS pair", () => {
    expect(refused(["--tls-cert", files.certFile])).to.contain("both --tls-cert");
    expect(refused(["--tls-client-ca", files.ca])).to.contain("mutual TLS is TLS");
  });
});
