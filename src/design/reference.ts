// Parsing of design references (URIs naming where a site design lives).

/** Schemes a design reference may use. */
export const DESIGN_SCHEMES = ["file", "http", "https", "deckhand+http", "deckhand+https"] as const;

/** The reference with any userinfo password replaced, safe for logs and errors. */
export function redactReference(ref: string): string {
  return ref.replace(/^([a-z][a-z0-9+.-]*:\/\/)([^/@]*)@/i, (_m, scheme: string, userinfo: string) => {
    const user = userinfo.split(":")[0];
    return `${scheme}${userinfo.includes(":") ? `${user}:***` : user}@`;
  });
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
  } else if (!url.hostname) {
    return `"${redactReference(ref)}" has no host`;
  }
  return null;
}
