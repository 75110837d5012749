/** Reading GGUF files: metadata and tensor infos (native, memory-mapped, fully validated) and tensor data. */
import { open } from 'node:fs/promises';
import { loadBinding } from '../binding.js';
import { withNativeErrors } from '../errors.js';
import type { KernelOptions } from '../quant.js';
import type { GgufInfo, GgufTensorInfo } from './types.js';

/**
 * Reads the header, metadata and tensor infos of a GGUF file. Every count, length, offset and size
 * is checked against the file; a malformed file rejects with a `GgufError` naming the byte offset
 * and what was wrong. Parsing runs on a native thread.
 */
export async function readGgufInfo(path: string): Promise<GgufInfo> {
  return withNativeErrors(() => loadBinding().readGgufInfo(path), { path }) as Promise<GgufInfo>;
}

/**
 * Reads one tensor and dequantizes it to F32 (shape as in its info, contiguous dimension first).
 * A type node-moe cannot decode (e.g. IQ2_XXS) rejects with `UnsupportedTypeError` naming the type
 * and the tensor.
 */
export async function readGgufTensor(path: string, name: string, options: KernelOptions = {}): Promise<Float32Array> {
  return withNativeErrors(() => loadBinding().readGgufTensor(path, name, options.isa), { path });
}

/** Reads the stored bytes of one tensor, undecoded. Pass `info` from {@link readGgufInfo} to skip re-parsing. */
export async function readGgufTensorBytes(path: string, name: string, info?: GgufInfo): Promise<Uint8Array> {
  const fileInfo = info ?? (await readGgufInfo(path));
  const tensor: GgufTensorInfo | undefined = fileInfo.tensors.find((t) => t.name === name);
  if (!tensor) throw new RangeError(`no tensor named '${name}' in ${path}`);
  const out = new Uint8Array(tensor.bytes);
  const handle = await open(path, 'r');
  try {
    let done = 0;
    while (done < out.length) {
      const { bytesRead } = await handle.read(out, done, out.length - done, tensor.fileOffset + done);
      if (bytesRead === 0) throw new RangeError(`${path} ended inside tensor '${name}'`);
      done += bytesRead;
    }
  } finally {
    await handle.close();
  }
  return out;
}
