// The names a verified TLS client certificate is known by, for the token
// file's entries without sha256. grpc-js hands over the peer certificate
// (call.getAuthContext().sslPeerCertificate) only when the TLS socket
// verified it against the server's client CA.
import type { PeerCertificate } from "node:tls";

/**
 * The subject strings a certificate may be listed under, in the order they
 * are tried: each SAN URI as "URI:<uri>" (e.g. a SPIFFE id), each SAN DNS
 * name as "DNS:<name>", then the subject's common name as "CN=<cn>". A
 * subject with several CNs offers none of them (which one would be meant?).
 * Other subject attributes (O, OU, ...) and SAN types are not matched.
 */
export function certificateNames(cert: Pick<PeerCertificate, "subject" | "subjectaltname">): string[] {
  const uris: string[] = [];
  const dns: string[] = [];
  for (const [type, value] of subjectAltNames(cert.subjectaltname ?? "")) {
    if (type === "URI") uris.push(`URI:${value}`);
    else if (type === "DNS") dns.push(`DNS:${value}`);
  }
  const cn = cert.subject?.CN as string | string[] | undefined;
  return [...uris, ...dns, ...(typeof cn === "string" && cn !== "" ? [`CN=${cn}`] : [])];
}

/**
 * Node's subjectaltname string, e.g. `DNS:a.example, URI:spiffe://x/y,
 * IP Address:10.0.0.1`, as [type, value] pairs. Since Node 17.3 a value with
 * characters that could confuse this format (a comma, a quote) is written as
 * a JSON string, e.g. `DNS:"a, b"`.
 */
export function subjectAltNames(s: string): [string, string][] {
  const out: [string, string][] = [];
  const re = /(?:^|, )([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)/g;
  for (const m of s.matchAll(re)) {
    let value = m[2]!;
    if (value.startsWith('"')) {
      try {
        value = JSON.parse(value) as string;
      } catch {
        continue;
      }
    }
    out.push([m[1]!, value]);
  }
  return out;
}
