/**
 * The corrupted-GGUF corpus shared by the JS mutation test and the ASan/UBSan native run: valid seed
 * files written with writeGguf, then deterministic mutants (truncations, byte flips, and length /
 * count / dimension / offset fields set to huge or random values).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { writeGguf, type GgufTensorInput } from '../../lib/index.js';
import { Prng } from './prng.js';

/** Corrupted files per run: the JS mutation test and the ASan/UBSan corpus run use the same ones. */
export const MUTANT_COUNT = 5000;

/** Writes the valid seed files into `dir` and returns their paths. */
export async function writeSeedFiles(dir: string): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const rng = new Prng(7);
  const tensor = (name: string, type: GgufTensorInput['type'], shape: number[]): GgufTensorInput => ({
    name,
    type,
    shape,
    data: rng.gaussianArray(shape.reduce((a, b) => a * b, 1)),
  });
  const everyType = {
    'general.architecture': 'llama',
    'test.u8': { type: 'u8', value: 200 },
    'test.i8': { type: 'i8', value: -100 },
    'test.u16': { type: 'u16', value: 60000 },
    'test.i16': { type: 'i16', value: -30000 },
    'test.u32': 4000000000,
    'test.i32': -2000000000,
    'test.f32': 0.5,
    'test.bool': true,
    'test.string': 'héllo',
    'test.u64': 1n << 40n,
    'test.i64': -(1n << 40n),
    'test.f64': { type: 'f64', value: Math.PI },
    'test.strings': ['a', 'bb', '', 'ccc'],
    'test.f32s': new Float32Array([1, 2, 3]),
    'test.i32s': new Int32Array([1, -2, 3]),
    'test.bools': [true, false],
    'test.u64s': new BigUint64Array([1n, 2n]),
  } as const;
  const seeds: [string, Parameters<typeof writeGguf>[1], number?][] = [
    ['every-type.gguf', { metadata: everyType, tensors: [tensor('a', 'F32', [8, 2]), tensor('b', 'F16', [16])] }],
    [
      'quantized.gguf',
      {
        metadata: { 'general.architecture': 'llama', 'general.name': 'q' },
        tensors: [tensor('q8', 'Q8_0', [64, 2]), tensor('q4k', 'Q4_K', [256]), tensor('mx', 'MXFP4', [32, 3]), tensor('bf', 'BF16', [4, 4])],
      },
    ],
    ['aligned-64.gguf', { metadata: { 'general.name': 'aligned' }, tensors: [tensor('x', 'F32', [3]), tensor('y', 'Q4_0', [32])] }, 64],
    ['no-tensors.gguf', { metadata: { 'general.name': 'empty', 'test.list': ['x', 'y'] }, tensors: [] }],
  ];
  const paths: string[] = [];
  for (const [name, model, alignment] of seeds) {
    const p = path.join(dir, name);
    await writeGguf(p, model, alignment ? { alignment } : {});
    paths.push(p);
  }
  return paths;
}

/** Offsets and widths of the header fields that carry a length, count, dimension, type or offset. */
export function lengthFieldOffsets(bytes: Uint8Array): { offset: number; width: 4 | 8 }[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const fields: { offset: number; width: 4 | 8 }[] = [];
  let p = 8;
  const u32 = () => { fields.push({ offset: p, width: 4 }); const v = view.getUint32(p, true); p += 4; return v; };
  const u64 = () => { fields.push({ offset: p, width: 8 }); const v = Number(view.getBigUint64(p, true)); p += 8; return v; };
  const str = () => {
    const length = u64(); // read first: `p += u64()` would add to the p from before the call
    p += length;
  };
  const sizes: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  const nTensors = u64();
  const nKv = u64();
  for (let i = 0; i < nKv; i++) {
    str();
    const type = u32();
    if (type === 8) str();
    else if (type === 9) {
      const elem = u32();
      const count = u64();
      if (elem === 8) for (let j = 0; j < count; j++) str();
      else p += count * sizes[elem]!;
    } else p += sizes[type]!;
  }
  for (let i = 0; i < nTensors; i++) {
    str();
    const nDims = u32();
    for (let d = 0; d < nDims; d++) u64();
    u32();
    u64();
  }
  return fields;
}

const HUGE_VALUES = [0xffffffffffffffffn, 0x8000000000000000n, 0x7fffffffffffffffn, 1n << 40n, 1n << 32n, 0xffffffffn, 0x80000000n];

/** Deterministic mutant number `index` of `seed` (the seed's bytes are not modified). */
export function mutate(seed: Uint8Array, index: number): Uint8Array {
  const rng = new Prng(1000 + index);
  const kind = index % 4;
  if (kind === 0) {
    // Truncation, biased towards the header where parsing happens.
    const headerish = Math.min(seed.length, 512);
    const cut = rng.next() < 0.7 ? rng.int(headerish) : rng.int(seed.length);
    return seed.slice(0, cut);
  }
  const out = seed.slice();
  const view = new DataView(out.buffer);
  if (kind === 1) {
    const flips = 1 + rng.int(8);
    for (let i = 0; i < flips; i++) {
      const at = rng.next() < 0.8 ? rng.int(Math.min(out.length, 512)) : rng.int(out.length);
      out[at]! ^= 1 << rng.int(8);
    }
    return out;
  }
  const fields = lengthFieldOffsets(seed);
  const field = fields[rng.int(fields.length)]!;
  const value =
    kind === 2 ? HUGE_VALUES[rng.int(HUGE_VALUES.length)]! : BigInt(rng.int(2 ** 31)) * (rng.next() < 0.5 ? 1n : 3n);
  if (field.width === 8) view.setBigUint64(field.offset, value & 0xffffffffffffffffn, true);
  else view.setUint32(field.offset, Number(value & 0xffffffffn), true);
  return out;
}

/** Writes `count` mutants of the seeds into `dir` (named mutant-00000.gguf …) and returns their paths. */
export async function writeMutantCorpus(dir: string, seedPaths: string[], count: number): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const seeds = await Promise.all(seedPaths.map((p) => readFile(p)));
  const paths: string[] = [];
  for (let i = 0; i < count; i++) {
    const seed = seeds[i % seeds.length]!;
    const p = path.join(dir, `mutant-${String(i).padStart(5, '0')}.gguf`);
    await writeFile(p, mutate(new Uint8Array(seed.buffer, seed.byteOffset, seed.byteLength), i));
    paths.push(p);
  }
  return paths;
}
