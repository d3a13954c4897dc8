// Parsing of design references (URIs naming where a site design lives).
import { fileURLToPath } from "node:url";
import { redactReference } from "../core/redact.js";

/** Schemes a design reference may use. */
export const DESIGN_SCHEMES = ["file", "http", "https", "deckhand+http", "deckhand+https"] as const;

// Masking of secrets in references and texts: core/redact.ts (the logger uses it too).
export { isSecretParam, MASK, redactReference, redactUrls } from "../core/redact.js";

/**
 * Checks that `ref` is an absolute URI with a supported scheme; returns the
 * problem in words, or null when it is acceptable.
 */
export function designRefProblem(ref: string, schemes: readonly string[] = DESIGN_SCHEMES): string | null {
  const supported = `supported schemes: ${schemes.join(", ")}`;
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(ref)?.[1]?.toLowerCase();
  if (!scheme) return `"${redactReference(ref)}" has no URI scheme; ${supported}`;
  if (!schemes.includes(scheme)) {
    return `scheme "${scheme}" of "${redactReference(ref)}" is not supported; ${supported}`;
  }
  let url: URL;
  try {
    url = new URL(ref);
  } catch {
    return `"${redactReference(ref)}" is not a valid URI`;
  }
  if (scheme === "file") {
    if (!/^file:\/\/(localhost)?\//i.test(ref)) return `"${redactReference(ref)}" must be an absolute file:///path`;
    return filePathProblem(url, ref);
  }
  if (!url.hostname) return `"${redactReference(ref)}" has no host`;
  // What the drivers derive from the reference must exist too: the http(s)
  // URL behind deckhand+http(s) (its host is parsed by stricter rules), and
  // the basic-auth credentials of the userinfo.
  let target = url;
  if (scheme.startsWith("deckhand+")) {
    try {
      target = new URL(ref.replace(/^deckhand\+/i, ""));
    } catch {
      return `"${redactReference(ref)}" is not a valid URI: without "deckhand+" it is not a valid ${scheme.slice("deckhand+".length)} URL`;
    }
  }
  if (!dnsHostOk(target.hostname)) {
    return `"${redactReference(ref)}" is not a valid URI: its host is not a DNS name (at most 253 characters, labels of 1 to 63)`;
  }
  if (!decodes(target.username) || !decodes(target.password)) {
    return `"${redactReference(ref)}" is not a valid URI: its user information is not valid percent-encoded UTF-8`;
  }
  return null;
}

/** An IP literal, or a name the resolver takes (getaddrinfo answers EINVAL for longer ones). */
function dnsHostOk(host: string): boolean {
  if (host.startsWith("[") || /^[0-9.]+$/.test(host)) return true; // the URL parser checked IP literals
  const name = host.endsWith(".") ? host.slice(0, -1) : host;
  return name.length <= 253 && name.split(".").every((l) => l.length >= 1 && l.length <= 63);
}

const decodes = (s: string) => {
  try {
    decodeURIComponent(s);
    return true;
  } catch {
    return false;
  }
};

/**
 * A file URL must decode to a path: percent-encoded UTF-8, no encoded "/"
 * (it cannot be part of a file name), no NUL (no file name holds one). These
 * depend on the reference alone, not on the file system, so they are
 * INVALID_ARGUMENT wherever the path points.
 */
function filePathProblem(url: URL, ref: string): string | null {
  let p: string;
  try {
    p = fileURLToPath(url);
  } catch (err) {
    const why = (err as { code?: string }).code === "ERR_INVALID_FILE_URL_PATH" ? "it encodes a / (%2F)" : "it is not valid percent-encoded UTF-8";
    return `"${redactReference(ref)}" is not a valid file URL: ${why}`;
  }
  if (p.includes("\0")) return `"${redactReference(ref)}" is not a valid file URL: it encodes a NUL character (%00)`;
  return null;
}
