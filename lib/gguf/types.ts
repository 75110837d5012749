/** Types shared by the GGUF reader and writer. */
import type { GgmlTypeName } from '../ggml-types.js';

/** GGUF metadata scalar types, by their short names. */
export type GgufScalarType = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'bool' | 'string' | 'u64' | 'i64' | 'f64';

/** The type of one metadata value: a scalar type, or an array of one (`'array<string>'`). */
export type GgufMetadataType = GgufScalarType | `array<${GgufScalarType}>`;

/**
 * A metadata value as read: 8- to 32-bit integers and floats are numbers, 64-bit integers bigints,
 * numeric arrays typed arrays (vocabularies are 100k+ entries), string and bool arrays plain arrays.
 */
export type GgufMetadataValue =
  | number
  | bigint
  | boolean
  | string
  | string[]
  | boolean[]
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigUint64Array
  | BigInt64Array;

export interface GgufTensorInfo {
  /** Tensor name, e.g. `blk.0.ffn_gate_exps.weight`. */
  name: string;
  /** ggml type name (`'Q4_K'`); `type#<id>` never occurs: unknown ids are rejected. */
  type: GgmlTypeName;
  /** ggml type id as stored in the file. */
  typeId: number;
  /** Dimensions, contiguous one first (ggml's ne0, ne1, …): a weight `[n_in, n_out]` holds n_out rows of n_in. */
  shape: number[];
  /** Offset of the data relative to the file's data section, as stored in the file. */
  offset: number;
  /** Absolute byte offset of the data in the file. */
  fileOffset: number;
  /** Size of the data in bytes. */
  bytes: number;
}

export interface GgufInfo {
  /** GGUF format version (2 or 3). */
  version: number;
  /** Data alignment (`general.alignment`, 32 by default). */
  alignment: number;
  /** Absolute offset of the tensor data section. */
  dataOffset: number;
  /** File size in bytes. */
  fileSize: number;
  /** Metadata values by key, in file order. */
  metadata: Record<string, GgufMetadataValue>;
  /** The stored type of every metadata value, so a file can be rewritten with identical types. */
  metadataTypes: Record<string, GgufMetadataType>;
  /** Tensor infos in file order. */
  tensors: GgufTensorInfo[];
}
