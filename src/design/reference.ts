// Parsing of design references (URIs naming where a site design lives).
import { fileURLToPath } from "node:url";

/** Schemes a design reference may use. */
export const DESIGN_SCHEMES = ["file", "http", "https", "deckhand+http", "deckhand+https"] as const;

/** What replaces a secret in a reference: a userinfo password, a secret query or fragment parameter's value. */
export const MASK = "***";

/**
 * Query and fragment parameters whose values are secrets, by name (case,
 * "-", "_" and "." ignored): passwords, tokens, keys, signatures and
 * credentials, e.g. password, api_key, apiKey, X-Api-Key, access_token,
 * client_secret, X-Amz-Signature, X-Amz-Credential, sig, auth. More is masked
 * than may be secret: a masked value only hides part of an echo, never what
 * the fetcher sends.
 */
const SECRET_PARAM = /^(?:pwd|pass|sig|auth|key)$|pass(?:word|wd|phrase)|secret|token|credential|signature|authori[sz]ation|key$|^key/;

export function isSecretParam(name: string): boolean {
  let n = name;
  try {
    n = decodeURIComponent(name.replace(/\+/g, " "));
  } catch {
    // not percent-encoded UTF-8: judged as written
  }
  return SECRET_PARAM.test(n.toLowerCase().replace(/[^a-z0-9]/g, ""));
}

/** `a=1&api_key=s` → `a=1&api_key=***`: the value of every secret parameter masked, the rest kept. */
function maskParams(params: string): string {
  return params.replace(/(^|[&;])([^&;=]*)=([^&;]*)/g, (m, sep: string, name: string, value: string) =>
    value !== "" && isSecretParam(name) ? `${sep}${name}=${MASK}` : m,
  );
}

/** The query's and the fragment's secret parameters of one URL masked. */
function maskQuery(url: string): string {
  const q = url.search(/[?#]/);
  if (q < 0) return url;
  const hash = url.indexOf("#", q);
  const query = url[q] === "?" ? url.slice(q + 1, hash < 0 ? undefined : hash) : undefined;
  const fragment = hash < 0 ? undefined : url.slice(hash + 1);
  return url.slice(0, q) + (query === undefined ? "" : `?${maskParams(query)}`) + (fragment === undefined ? "" : `#${maskParams(fragment)}`);
}

/**
 * The reference with its secrets masked, safe for logs, errors and responses
 * to callers who may not see it: a userinfo password (`user:***@`; the
 * userinfo ends at the last "@" of the authority, as URL parsers take it, so
 * a password holding an "@" is hidden whole), and the values of secret query
 * and fragment parameters (`?api_key=***`, see SECRET_PARAM).
 */
export function redactReference(ref: string): string {
  const out = ref.replace(/^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)@/i, (_m, scheme: string, userinfo: string) => {
    const user = userinfo.split(":")[0];
    return `${scheme}${userinfo.includes(":") ? `${user}:${MASK}` : user}@`;
  });
  return maskQuery(out);
}

/** Every URL's password and secret query and fragment parameters in a text (an error message, a stack) replaced by ***. */
export function redactUrls(text: string): string {
  return text
    .replace(/([a-z][a-z0-9+.-]*:\/\/[^\s/?#:@"'<>]*):[^\s/?#"'<>]*@/gi, `$1:${MASK}@`)
    .replace(/[a-z][a-z0-9+.-]*:\/\/[^\s"'<>]*/gi, maskQuery);
}

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
