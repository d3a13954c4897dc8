// A minimal protobuf binary writer for the hot responses (rpc/taskWire.ts).
// protobuf-es's BinaryWriter takes its ASCII fast path only for strings of
// up to 32 characters; every UUID (36) went through TextEncoder, about
// 1.2 µs each. This one writes ASCII of any length byte by byte, other text
// with Buffer.write, and nested messages by reserving their length prefix.

const MAX_NESTED_BYTES = 0x0fff_ffff; // a 4-byte varint prefix: 256 MiB

export class WireWriter {
  private buf: Buffer;
  private pos = 0;
  /** Where each open message's reserved 4-byte length starts. */
  private readonly open: number[] = [];

  /** `size`: the bytes expected, so that the buffer rarely has to grow (and be copied). */
  constructor(size = 1024) {
    this.buf = Buffer.allocUnsafe(size);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** An unsigned varint below 2^32. */
  uint32(v: number): this {
    this.ensure(5);
    while (v > 0x7f) {
      this.buf[this.pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[this.pos++] = v;
    return this;
  }

  tag(field: number, wireType: 0 | 1 | 2): this {
    return this.uint32((field << 3) | wireType);
  }

  /** int32/enum: negative values take ten bytes, as protobuf specifies. */
  int32(v: number): this {
    return v >= 0 ? this.uint32(v) : this.int64(BigInt(v));
  }

  int64(v: bigint): this {
    let u = BigInt.asUintN(64, v);
    this.ensure(10);
    while (u > 0x7fn) {
      this.buf[this.pos++] = Number(u & 0x7fn) | 0x80;
      u >>= 7n;
    }
    this.buf[this.pos++] = Number(u);
    return this;
  }

  bool(v: boolean): this {
    return this.uint32(v ? 1 : 0);
  }

  double(v: number): this {
    this.ensure(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
    return this;
  }

  /** A length-delimited string (the tag is the caller's). */
  string(s: string): this {
    const n = s.length;
    let ascii = true;
    for (let i = 0; i < n; i++) {
      if (s.charCodeAt(i) > 0x7f) {
        ascii = false;
        break;
      }
    }
    if (ascii) {
      this.uint32(n);
      this.ensure(n);
      for (let i = 0; i < n; i++) this.buf[this.pos++] = s.charCodeAt(i);
      return this;
    }
    const bytes = Buffer.byteLength(s, "utf8");
    this.uint32(bytes);
    this.ensure(bytes);
    this.pos += this.buf.write(s, this.pos, "utf8");
    return this;
  }

  bytes(b: Uint8Array): this {
    this.uint32(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  /** Starts a nested message (its tag already written): end it with close(). */
  openMessage(): this {
    this.ensure(4);
    this.open.push(this.pos);
    this.pos += 4;
    return this;
  }

  /** Ends the innermost open message, writing its length in the fewest bytes (as every encoder does). */
  close(): this {
    const start = this.open.pop()!;
    const body = this.pos - (start + 4);
    if (body > MAX_NESTED_BYTES) throw new RangeError(`nested message of ${body} bytes`);
    const prefix = body < 0x80 ? 1 : body < 0x4000 ? 2 : body < 0x20_0000 ? 3 : 4;
    if (prefix < 4) this.buf.copy(this.buf, start + prefix, start + 4, this.pos);
    let v = body;
    for (let i = 0; i < prefix - 1; i++) {
      this.buf[start + i] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[start + prefix - 1] = v;
    this.pos -= 4 - prefix;
    return this;
  }

  /** The bytes written (a view: valid until the writer is used again). */
  finish(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }
}
