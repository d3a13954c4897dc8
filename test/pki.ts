// A throwaway PKI for TLS tests: a CA and certificates it issues, written to
// files as an operator's would be.
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { generate } from "selfsigned";

export interface Issued {
  cert: string;
  key: string;
}

export async function makeCa(cn: string): Promise<Issued> {
  const ca = await generate([{ name: "commonName", value: cn }], {
    algorithm: "sha256",
    keyType: "ec",
    curve: "P-256",
    extensions: [
      { name: "basicConstraints", cA: true, critical: true },
      { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    ],
  });
  return { cert: ca.cert, key: ca.private };
}

/** A server certificate for 127.0.0.1/localhost, or a client certificate with this CN. */
export async function issue(ca: Issued, cn: string, kind: "server" | "client"): Promise<Issued> {
  const leaf = await generate([{ name: "commonName", value: cn }], {
    algorithm: "sha256",
    keyType: "ec",
    curve: "P-256",
    ca: { key: ca.key, cert: ca.cert },
    extensions:
      kind === "server"
        ? [
            {
              name: "subjectAltName",
              altNames: [
                { type: 7, ip: "127.0.0.1" },
                { type: 2, value: "localhost" },
              ],
            },
            { name: "extKeyUsage", serverAuth: true },
          ]
        : [{ name: "extKeyUsage", clientAuth: true }],
  });
  return { cert: leaf.cert, key: leaf.private };
}

/** Writes a certificate and key as `<name>.crt` / `<name>.key` in dir; returns their paths. */
export async function writePair(dir: string, name: string, pair: Issued): Promise<{ certFile: string; keyFile: string }> {
  const certFile = path.join(dir, `${name}.crt`);
  const keyFile = path.join(dir, `${name}.key`);
  await writeFile(certFile, pair.cert);
  await writeFile(keyFile, pair.key, { mode: 0o600 });
  return { certFile, keyFile };
}
