// Secrets masked in what is logged or echoed: URL passwords and secret query
// and fragment parameters, in design references (design/reference.ts) and in
// any text, e.g. an error logged (log.ts).

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
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/[^\s/?#:@"'<>]*):[^\s/?#"'<>]*@/gi, `$1:${MASK}@`).replace(/[a-z][a-z0-9+.-]*:\/\/[^\s"'<>]*/gi, maskQuery);
}
