/**
 * Writing GGUF v3 files byte-compatible with llama.cpp: header, metadata of every type, tensor infos
 * and tensor data packed in info order, each aligned to `general.alignment` (32 by default), as
 * gguf-py and llama-quantize lay them out. Float data is quantized natively to the tensor's type.
 */
import { open, rename, rm } from 'node:fs/promises';
import { ggmlTypeByteSize, ggmlTypeGeometry, type GgmlTypeName } from '../ggml-types.js';
import { quantize, type CpuKernelLevel } from '../quant.js';
import type { GgufMetadataType, GgufMetadataValue, GgufScalarType } from './types.js';

/** A metadata value with an explicit stored type, e.g. `{ type: 'u64', value: 5n }`. */
export interface GgufTypedValue {
  type: GgufMetadataType;
  value: GgufMetadataValue | readonly string[] | readonly boolean[] | readonly number[] | readonly bigint[];
}

/**
 * A metadata value to write. Without an explicit type: strings → string, booleans → bool,
 * non-negative integers up to 2^32-1 → u32, other 32-bit integers → i32, other numbers → f32,
 * bigints → u64 (i64 when negative), typed arrays → arrays of their element type, string[] →
 * array<string>, boolean[] → array<bool>, number[] → array<i32> when all are integers else array<f32>.
 */
export type GgufMetadataInput =
  | GgufMetadataValue
  | GgufTypedValue
  | readonly string[]
  | readonly boolean[]
  | readonly number[]
  | readonly bigint[];

export type GgufTensorData = Float32Array | Uint8Array;

export interface GgufTensorInput {
  /** Tensor name, at most 63 bytes of UTF-8, unique in the file. */
  name: string;
  /** Dimensions, contiguous one first (ggml's ne0 …), 1 to 4 of them; ne0 must be a multiple of the type's block size. */
  shape: readonly number[];
  /** Stored type. */
  type: GgmlTypeName;
  /**
   * The values: a Float32Array (quantized to `type` natively), or a Uint8Array holding data already
   * encoded as `type`. A function is called when the tensor is written, so large models need not be
   * held in memory at once.
   */
  data: GgufTensorData | (() => GgufTensorData | Promise<GgufTensorData>);
}

export interface GgufWriteInput {
  /** Metadata in the order to write it. */
  metadata: Record<string, GgufMetadataInput> | Map<string, GgufMetadataInput>;
  /** Stored types by key, overriding inference (the `metadataTypes` of `readGgufInfo` fits here). */
  metadataTypes?: Record<string, GgufMetadataType>;
  tensors: readonly GgufTensorInput[];
}

export interface WriteGgufOptions {
  /** Data alignment in bytes, a power of two. Default: `general.alignment` from the metadata, else 32. */
  alignment?: number;
  /** Kernel level for quantization. Default: the best the CPU supports. */
  isa?: CpuKernelLevel;
  /** Aborts the write; the partial file is removed. */
  signal?: AbortSignal;
  /** Called after each tensor is written. */
  onProgress?: (progress: { tensorsWritten: number; tensorCount: number; bytesWritten: number; totalBytes: number }) => void;
}

const SCALAR_TYPE_IDS: Record<GgufScalarType, number> = {
  u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, u64: 10, i64: 11, f64: 12,
};
const ARRAY_TYPE_ID = 9;
const MAX_TENSOR_NAME_BYTES = 63;
const GGUF_MAGIC = 0x46554747;
const GGUF_VERSION = 3;

/** Growable little-endian byte buffer for the header part of the file. */
class ByteWriter {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v: number) { this.reserve(1); this.view.setUint8(this.length, v); this.length += 1; }
  i8(v: number) { this.reserve(1); this.view.setInt8(this.length, v); this.length += 1; }
  u16(v: number) { this.reserve(2); this.view.setUint16(this.length, v, true); this.length += 2; }
  i16(v: number) { this.reserve(2); this.view.setInt16(this.length, v, true); this.length += 2; }
  u32(v: number) { this.reserve(4); this.view.setUint32(this.length, v, true); this.length += 4; }
  i32(v: number) { this.reserve(4); this.view.setInt32(this.length, v, true); this.length += 4; }
  f32(v: number) { this.reserve(4); this.view.setFloat32(this.length, v, true); this.length += 4; }
  f64(v: number) { this.reserve(8); this.view.setFloat64(this.length, v, true); this.length += 8; }
  u64(v: bigint) { this.reserve(8); this.view.setBigUint64(this.length, v, true); this.length += 8; }
  i64(v: bigint) { this.reserve(8); this.view.setBigInt64(this.length, v, true); this.length += 8; }
  bytes(b: Uint8Array) { this.reserve(b.length); this.buf.set(b, this.length); this.length += b.length; }
  string(s: string) {
    const b = Buffer.from(s, 'utf8');
    this.u64(BigInt(b.length));
    this.bytes(b);
  }
  padTo(alignment: number) {
    const pad = (alignment - (this.length % alignment)) % alignment;
    this.reserve(pad);
    this.buf.fill(0, this.length, this.length + pad);
    this.length += pad;
  }
  result(): Uint8Array { return this.buf.subarray(0, this.length); }
}

const INT_RANGES: Partial<Record<GgufScalarType, [number, number]>> = {
  u8: [0, 0xff], i8: [-0x80, 0x7f], u16: [0, 0xffff], i16: [-0x8000, 0x7fff],
  u32: [0, 0xffffffff], i32: [-0x80000000, 0x7fffffff],
};

function writeScalar(w: ByteWriter, type: GgufScalarType, value: unknown, key: string): void {
  const bad = (): never => {
    throw new RangeError(`metadata '${key}': ${String(value)} is not a valid ${type} value`);
  };
  const range = INT_RANGES[type];
  if (range) {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < range[0] || value > range[1]) bad();
    const v = value as number;
    ({ u8: () => w.u8(v), i8: () => w.i8(v), u16: () => w.u16(v), i16: () => w.i16(v), u32: () => w.u32(v), i32: () => w.i32(v) })[
      type as 'u8'
    ]();
    return;
  }
  switch (type) {
    case 'f32':
    case 'f64':
      if (typeof value !== 'number') bad();
      return type === 'f32' ? w.f32(value as number) : w.f64(value as number);
    case 'bool':
      if (typeof value !== 'boolean') bad();
      return w.u8(value ? 1 : 0);
    case 'string':
      if (typeof value !== 'string') bad();
      return w.string(value as string);
    case 'u64':
    case 'i64': {
      if (typeof value === 'number' && !Number.isSafeInteger(value)) bad();
      if (typeof value !== 'number' && typeof value !== 'bigint') bad();
      const v = BigInt(value as number | bigint);
      const [lo, hi] = type === 'u64' ? [0n, (1n << 64n) - 1n] : [-(1n << 63n), (1n << 63n) - 1n];
      if (v < lo || v > hi) bad();
      return type === 'u64' ? w.u64(v) : w.i64(v);
    }
    default:
      bad();
  }
}

function isTypedValue(v: unknown): v is GgufTypedValue {
  return typeof v === 'object' && v !== null && !ArrayBuffer.isView(v) && !Array.isArray(v) && 'type' in v && 'value' in v;
}

function inferType(value: unknown, key: string): GgufMetadataType {
  if (typeof value === 'string') return 'string';
  if (typeof value === 'boolean') return 'bool';
  if (typeof value === 'bigint') return value < 0n ? 'i64' : 'u64';
  if (typeof value === 'number') {
    if (Number.isInteger(value)) {
      if (value >= 0 && value <= 0xffffffff) return 'u32';
      if (value >= -0x80000000 && value < 0) return 'i32';
      return value < 0 ? 'i64' : 'u64';
    }
    return 'f32';
  }
  if (value instanceof Uint8Array) return 'array<u8>';
  if (value instanceof Int8Array) return 'array<i8>';
  if (value instanceof Uint16Array) return 'array<u16>';
  if (value instanceof Int16Array) return 'array<i16>';
  if (value instanceof Uint32Array) return 'array<u32>';
  if (value instanceof Int32Array) return 'array<i32>';
  if (value instanceof Float32Array) return 'array<f32>';
  if (value instanceof Float64Array) return 'array<f64>';
  if (value instanceof BigUint64Array) return 'array<u64>';
  if (value instanceof BigInt64Array) return 'array<i64>';
  if (Array.isArray(value)) {
    if (value.every((v) => typeof v === 'string')) return value.length ? 'array<string>' : 'array<i32>';
    if (value.every((v) => typeof v === 'boolean')) return 'array<bool>';
    if (value.every((v) => typeof v === 'bigint')) return 'array<i64>';
    if (value.every((v) => typeof v === 'number')) return value.every(Number.isInteger) ? 'array<i32>' : 'array<f32>';
  }
  throw new TypeError(`metadata '${key}': cannot store a value of this kind in GGUF (${Object.prototype.toString.call(value)})`);
}

function writeValue(w: ByteWriter, type: GgufMetadataType, value: unknown, key: string): void {
  const array = /^array<(\w+)>$/.exec(type);
  if (!array) {
    if (!(type in SCALAR_TYPE_IDS)) throw new TypeError(`metadata '${key}': unknown GGUF type '${type}'`);
    w.u32(SCALAR_TYPE_IDS[type as GgufScalarType]);
    writeScalar(w, type as GgufScalarType, value, key);
    return;
  }
  const elemType = array[1] as GgufScalarType;
  if (!(elemType in SCALAR_TYPE_IDS)) throw new TypeError(`metadata '${key}': unknown GGUF array element type '${elemType}'`);
  if (!Array.isArray(value) && !ArrayBuffer.isView(value)) {
    throw new TypeError(`metadata '${key}': a value of type ${type} must be an array or typed array`);
  }
  const items = value as ArrayLike<unknown>;
  w.u32(ARRAY_TYPE_ID);
  w.u32(SCALAR_TYPE_IDS[elemType]);
  w.u64(BigInt(items.length));
  for (let i = 0; i < items.length; i++) writeScalar(w, elemType, items[i], `${key}[${i}]`);
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

interface PlannedTensor {
  input: GgufTensorInput;
  elementCount: number;
  bytes: number;
  offset: number;
}

function planTensor(t: GgufTensorInput): Omit<PlannedTensor, 'offset'> {
  const geometry = ggmlTypeGeometry(t.type);
  const nameBytes = Buffer.byteLength(t.name, 'utf8');
  if (nameBytes === 0 || nameBytes > MAX_TENSOR_NAME_BYTES) {
    throw new RangeError(`tensor name '${t.name}' must be 1 to ${MAX_TENSOR_NAME_BYTES} bytes of UTF-8 (is ${nameBytes})`);
  }
  if (t.shape.length < 1 || t.shape.length > 4) {
    throw new RangeError(`tensor '${t.name}': shape must have 1 to 4 dimensions, got [${t.shape.join(', ')}]`);
  }
  let elementCount = 1;
  for (const d of t.shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new RangeError(`tensor '${t.name}': bad dimension ${d}`);
    elementCount *= d;
  }
  if (!Number.isSafeInteger(elementCount)) throw new RangeError(`tensor '${t.name}': too many elements`);
  if (t.shape[0]! % geometry.blockSize !== 0) {
    throw new RangeError(
      `tensor '${t.name}': the first dimension (${t.shape[0]}) must be a multiple of the ${t.type} block size ${geometry.blockSize}`,
    );
  }
  return { input: t, elementCount, bytes: ggmlTypeByteSize(t.type, elementCount) };
}

async function encodeTensor(p: PlannedTensor, isa: CpuKernelLevel | undefined): Promise<Uint8Array> {
  const { input } = p;
  const data = typeof input.data === 'function' ? await input.data() : input.data;
  if (data instanceof Float32Array) {
    if (data.length !== p.elementCount) {
      throw new RangeError(`tensor '${input.name}': shape [${input.shape.join(', ')}] needs ${p.elementCount} values, got ${data.length}`);
    }
    if (input.type === 'F32') return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return quantize(input.type, data, { isa });
  }
  if (data instanceof Uint8Array) {
    if (data.length !== p.bytes) {
      throw new RangeError(`tensor '${input.name}': ${p.elementCount} ${input.type} values take ${p.bytes} bytes, got ${data.length}`);
    }
    return data;
  }
  throw new TypeError(`tensor '${input.name}': data must be a Float32Array or a Uint8Array`);
}

/**
 * Writes a GGUF v3 file. The file appears under `path` only once complete (it is written to a
 * temporary name and renamed); on error or abort nothing is left behind.
 */
export async function writeGguf(path: string, model: GgufWriteInput, options: WriteGgufOptions = {}): Promise<void> {
  const entries: [string, GgufMetadataInput][] =
    model.metadata instanceof Map ? [...model.metadata.entries()] : Object.entries(model.metadata);
  const storedAlignment = entries.find(([k]) => k === 'general.alignment')?.[1];
  const alignment = options.alignment ?? (typeof storedAlignment === 'number' ? storedAlignment : 32);
  if (!Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0 || alignment > 0x80000000) {
    throw new RangeError(`alignment must be a power of two, got ${alignment}`);
  }
  if (storedAlignment === undefined && alignment !== 32) entries.push(['general.alignment', { type: 'u32', value: alignment }]);

  const header = new ByteWriter();
  header.u32(GGUF_MAGIC);
  header.u32(GGUF_VERSION);
  header.u64(BigInt(model.tensors.length));
  header.u64(BigInt(entries.length));
  const seenKeys = new Set<string>();
  for (const [key, input] of entries) {
    if (!key) throw new RangeError('metadata keys must not be empty');
    if (seenKeys.has(key)) throw new RangeError(`duplicate metadata key '${key}'`);
    seenKeys.add(key);
    const explicit = model.metadataTypes?.[key];
    const [type, value] = isTypedValue(input) ? [input.type, input.value] : [explicit ?? inferType(input, key), input];
    if (key === 'general.alignment' && (type !== 'u32' || value !== alignment)) {
      throw new RangeError(`general.alignment must be stored as u32 ${alignment}`);
    }
    header.string(key);
    writeValue(header, type, value, key);
  }

  const seenNames = new Set<string>();
  let offset = 0;
  const planned: PlannedTensor[] = model.tensors.map((t) => {
    if (seenNames.has(t.name)) throw new RangeError(`duplicate tensor name '${t.name}'`);
    seenNames.add(t.name);
    const p = { ...planTensor(t), offset };
    offset += alignUp(p.bytes, alignment);
    return p;
  });
  for (const p of planned) {
    header.string(p.input.name);
    header.u32(p.input.shape.length);
    for (const d of p.input.shape) header.u64(BigInt(d));
    header.u32(ggmlTypeGeometry(p.input.type).id);
    header.u64(BigInt(p.offset));
  }
  if (planned.length > 0) header.padTo(alignment);

  const totalBytes = header.length + offset;
  const tmpPath = `${path}.tmp-${process.pid}-${Date.now()}`;
  const file = await open(tmpPath, 'w');
  let ok = false;
  try {
    let position = 0;
    const write = async (bytes: Uint8Array) => {
      let done = 0;
      while (done < bytes.length) {
        const { bytesWritten } = await file.write(bytes, done, bytes.length - done, position);
        done += bytesWritten;
        position += bytesWritten;
      }
    };
    await write(header.result());
    const padding = new Uint8Array(alignment);
    for (let i = 0; i < planned.length; i++) {
      options.signal?.throwIfAborted();
      const p = planned[i]!;
      await write(await encodeTensor(p, options.isa));
      const pad = alignUp(p.bytes, alignment) - p.bytes;
      if (pad) await write(padding.subarray(0, pad));
      options.onProgress?.({ tensorsWritten: i + 1, tensorCount: planned.length, bytesWritten: position, totalBytes });
    }
    options.signal?.throwIfAborted();
    ok = true;
  } finally {
    await file.close();
    if (!ok) await rm(tmpPath, { force: true });
  }
  await rename(tmpPath, path);
}
