// The server's TLS identity (and, for mutual TLS, the CA its clients'
// certificates must chain to), re-read when the files change: rotation
// without a restart. A new set that does not load (unreadable, not PEM, a key
// that does not match the certificate) is logged and the old one kept.
import { createHash, X509Certificate } from "node:crypto";
import { watch, type FSWatcher } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { EventEmitter } from "node:events";
import type { Logger } from "../core/log.js";

export interface TlsFiles {
  certFile: string;
  keyFile: string;
  /** With it, clients must present a certificate issued by this CA (mutual TLS). */
  clientCaFile?: string;
}

/** How often the files are checked besides change notifications (which some file systems and mounts do not deliver). */
const POLL_MS = 10_000;
/** Changes are picked up this long after the last notification, so a cert and key written one after the other load together. */
const DEBOUNCE_MS = 100;

/** Emits "loaded" when a new certificate set is in use, "rejected" (with the reason) when one did not load. */
export class TlsSource extends EventEmitter {
  private current!: Loaded;
  private readonly identityListeners = new Set<(u: { certificate: Buffer; privateKey: Buffer } | null) => void>();
  private readonly caListeners = new Set<(u: { caCertificate: Buffer } | null) => void>();
  private readonly watchers: FSWatcher[] = [];
  private poll: NodeJS.Timeout | undefined;
  private lastRejection: string | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private reloading: Promise<void> = Promise.resolve();

  private constructor(
    readonly files: TlsFiles,
    private readonly log: Logger,
  ) {
    super();
  }

  /** Loads the files (throws with a clear message when they do not load) and starts watching them. */
  static async start(files: TlsFiles, log: Logger): Promise<TlsSource> {
    const src = new TlsSource(files, log);
    src.current = await load(files);
    const dirs = new Set([files.certFile, files.keyFile, files.clientCaFile].filter((f): f is string => !!f).map((f) => path.dirname(f)));
    for (const dir of dirs) {
      try {
        // Watch the directory: rotation tools often replace files by rename.
        src.watchers.push(watch(dir, { persistent: false }, () => src.schedule()));
      } catch (err) {
        log.warn({ dir, err: String(err) }, "cannot watch the TLS files' directory; relying on polling");
      }
    }
    src.poll = setInterval(() => src.schedule(), POLL_MS);
    src.poll.unref();
    return src;
  }

  /** Mutual TLS: clients must present a certificate from the client CA. */
  get requireClientCertificate(): boolean {
    return this.files.clientCaFile !== undefined;
  }

  /**
   * grpc-js credentials served from this source (it is their certificate
   * provider): a reload applies to new connections.
   */
  serverCredentials(): grpc.ServerCredentials {
    const provider: grpc.experimental.CertificateProvider = {
      // grpc-js registers its watcher only after adding these listeners:
      // the first update must come later, as it does from its own providers.
      addIdentityCertificateListener: (l) => {
        this.identityListeners.add(l);
        queueMicrotask(() => l({ certificate: this.current.cert, privateKey: this.current.key }));
      },
      removeIdentityCertificateListener: (l) => void this.identityListeners.delete(l),
      addCaCertificateListener: (l) => {
        this.caListeners.add(l);
        queueMicrotask(() => l(this.current.ca ? { caCertificate: this.current.ca } : null));
      },
      removeCaCertificateListener: (l) => void this.caListeners.delete(l),
    };
    // grpc-js 1.14 hands this function's first argument to the constructor's
    // identity parameter despite its name: one object serving both roles
    // works either way; the CA one must be null without mutual TLS (it
    // decides whether a client certificate is requested).
    const mtls = this.requireClientCertificate;
    return grpc.experimental.createCertificateProviderServerCredentials(provider, mtls ? provider : null, mtls);
  }

  /** Re-reads the files now (also what change notifications and the poll do). */
  reload(): Promise<void> {
    this.reloading = this.reloading.then(async () => {
      try {
        const next = await load(this.files);
        if (next.fingerprint !== this.current.fingerprint) {
          this.current = next;
          for (const l of this.identityListeners) l({ certificate: next.cert, privateKey: next.key });
          if (next.ca) for (const l of this.caListeners) l({ caCertificate: next.ca });
          this.log.info({ cert: this.files.certFile }, "loaded a new TLS certificate");
          this.emit("loaded");
        }
      } catch (err) {
        const reason = (err as Error).message;
        if (reason !== this.lastRejection) this.log.error({ err: reason }, "new TLS files do not load; still serving the previous certificate");
        this.lastRejection = reason;
        this.emit("rejected", reason);
        return;
      }
      this.lastRejection = undefined;
    });
    return this.reloading;
  }

  close(): void {
    clearInterval(this.poll);
    clearTimeout(this.debounce);
    for (const w of this.watchers) w.close();
  }

  private schedule(): void {
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => void this.reload(), DEBOUNCE_MS);
    this.debounce.unref();
  }
}

interface Loaded {
  cert: Buffer;
  key: Buffer;
  ca: Buffer | undefined;
  fingerprint: string;
}

async function load(files: TlsFiles): Promise<Loaded> {
  const read = async (what: string, file: string) => {
    try {
      return await readFile(file);
    } catch (err) {
      throw new Error(`cannot read the TLS ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const [cert, key, ca] = await Promise.all([
    read("certificate", files.certFile),
    read("key", files.keyFile),
    files.clientCaFile ? read("client CA", files.clientCaFile) : Promise.resolve(undefined),
  ]);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch {
    throw new Error(`${files.certFile} is not a PEM certificate`);
  }
  if (ca) {
    try {
      new X509Certificate(ca);
    } catch {
      throw new Error(`${files.clientCaFile} is not a PEM certificate`);
    }
  }
  try {
    // Throws when the key does not match the certificate.
    tls.createSecureContext({ cert, key, ca });
  } catch (err) {
    throw new Error(`the TLS key ${files.keyFile} does not fit the certificate ${files.certFile}: ${(err as Error).message}`);
  }
  return {
    cert,
    key,
    ca,
    fingerprint: `${leaf.fingerprint256}|${ca ? new X509Certificate(ca).fingerprint256 : ""}|${createHash("sha256").update(key).digest("hex")}`,
  };
}
