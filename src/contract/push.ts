// A server stream whose producer pushes its messages to the call, instead of
// the call pulling them from an async iterator.
//
// Why: one watch event goes to every watcher of its task within one turn of
// the event loop. Pulled through async generators, each stream paid a chain
// of promise resolutions per event: 10.5–11.7 µs of server CPU per event per
// stream, against 7.7–8.6 µs pushed (BENCHMARKS.md "Watch fan-out, pushed"),
// where the feed's loop writes to every stream directly, as a bare grpc-js
// broadcast does.
//
// Contract:
// - `run(sink)` sends the stream's messages with `sink.write` and settles
//   when the stream ends: resolved when it ends normally, rejected with why
//   it failed (which the edge maps to the call's status, as for a thrown
//   error);
// - `write` returning false means the client is not keeping up: the producer
//   sends nothing more until `ready()` resolves (it rejects once the call is
//   over). What was written is kept and sent in order either way;
// - `write(message, sent)` calls `sent` once the message has left the
//   process's buffers (handed to the connection), or the call failed; a
//   call that is cancelled may never call it (budget.ts counts on neither);
// - `run` is called once.

export interface Sink<T> {
  /** Sends one message; false: send no more until ready() resolves. `sent`: called once it left (see above). */
  write(message: T, sent?: () => void): boolean;
  /** Resolves once the client has caught up; rejects when the call ends. */
  ready(): Promise<void>;
}

export class PushStream<T> {
  constructor(readonly run: (sink: Sink<T>) => Promise<void>) {}

  /** The same stream with every message converted by `fn` (called once per message, when it is sent). */
  map<U>(fn: (message: T) => U): PushStream<U> {
    return new PushStream<U>((sink) => this.run({ write: (message, sent) => sink.write(fn(message), sent), ready: () => sink.ready() }));
  }
}
