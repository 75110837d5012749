import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  GgufError,
  readGgufInfo,
  readGgufTensor,
  readGgufTensorBytes,
  UnsupportedTypeError,
  writeGguf,
  type GgufTensorInput,
} from '../lib/index.js';
import { writeSeedFiles } from './helpers/gguf-corpus.js';
import { Prng } from './helpers/prng.js';
import { tempDir } from './helpers/tmp.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});

describe('writeGguf + readGgufInfo', () => {
  it('round-trips metadata of every type with its stored type', async () => {
    const [everyType] = await writeSeedFiles(path.join(dir, 'seeds'));
    const info = await readGgufInfo(everyType!);
    expect(info.version).toBe(3);
    expect(info.alignment).toBe(32);
    const m = info.metadata;
    expect(m['test.u8']).toBe(200);
    expect(m['test.i8']).toBe(-100);
    expect(m['test.u16']).toBe(60000);
    expect(m['test.i16']).toBe(-30000);
    expect(m['test.u32']).toBe(4000000000);
    expect(m['test.i32']).toBe(-2000000000);
    expect(m['test.f32']).toBe(0.5);
    expect(m['test.bool']).toBe(true);
    expect(m['test.string']).toBe('héllo');
    expect(m['test.u64']).toBe(1n << 40n);
    expect(m['test.i64']).toBe(-(1n << 40n));
    expect(m['test.f64']).toBe(Math.PI);
    expect(m['test.strings']).toEqual(['a', 'bb', '', 'ccc']);
    expect(m['test.f32s']).toEqual(new Float32Array([1, 2, 3]));
    expect(m['test.i32s']).toEqual(new Int32Array([1, -2, 3]));
    expect(m['test.bools']).toEqual([true, false]);
    expect(m['test.u64s']).toEqual(new BigUint64Array([1n, 2n]));
    expect(info.metadataTypes).toMatchObject({
      'test.u8': 'u8', 'test.i8': 'i8', 'test.u16': 'u16', 'test.i16': 'i16', 'test.u32': 'u32', 'test.i32': 'i32',
      'test.f32': 'f32', 'test.bool': 'bool', 'test.string': 'string', 'test.u64': 'u64', 'test.i64': 'i64',
      'test.f64': 'f64', 'test.strings': 'array<string>', 'test.f32s': 'array<f32>', 'test.i32s': 'array<i32>',
      'test.bools': 'array<bool>', 'test.u64s': 'array<u64>',
    });
    expect(Object.keys(m)[0]).toBe('general.architecture');
  });

  it('lays tensors out densely in info order, aligned, as ggml requires', async () => {
    const rng = new Prng(3);
    const tensors: GgufTensorInput[] = [
      { name: 'a', type: 'F32', shape: [3], data: rng.gaussianArray(3) },
      { name: 'b', type: 'Q8_0', shape: [64, 3], data: rng.gaussianArray(192) },
      { name: 'c', type: 'Q6_K', shape: [256, 2, 2], data: rng.gaussianArray(1024) },
      { name: 'd', type: 'F16', shape: [5, 1, 1, 2], data: rng.gaussianArray(10) },
    ];
    for (const alignment of [32, 64, 256]) {
      const file = path.join(dir, `layout-${alignment}.gguf`);
      await writeGguf(file, { metadata: { 'general.name': 'layout' }, tensors }, { alignment });
      const info = await readGgufInfo(file);
      expect(info.alignment).toBe(alignment);
      expect(info.dataOffset % alignment).toBe(0);
      expect(info.tensors.map((t) => [t.name, t.type, t.shape, t.bytes])).toEqual([
        ['a', 'F32', [3], 12],
        ['b', 'Q8_0', [64, 3], 6 * 34],
        ['c', 'Q6_K', [256, 2, 2], 4 * 210],
        ['d', 'F16', [5, 1, 1, 2], 20],
      ]);
      let expected = 0;
      for (const t of info.tensors) {
        expect(t.offset).toBe(expected);
        expect(t.fileOffset).toBe(info.dataOffset + t.offset);
        expected += Math.ceil(t.bytes / alignment) * alignment;
      }
      expect(info.fileSize).toBe(info.dataOffset + expected);
      expect(info.metadataTypes['general.alignment']).toBe(alignment === 32 ? undefined : 'u32');
    }
  });

  it('rewrites a file byte for byte from what readGgufInfo returns', async () => {
    const seeds = await writeSeedFiles(path.join(dir, 'seeds-rewrite'));
    for (const seed of seeds) {
      const info = await readGgufInfo(seed);
      const out = `${seed}.rewritten`;
      await writeGguf(out, {
        metadata: info.metadata,
        metadataTypes: info.metadataTypes,
        tensors: await Promise.all(
          info.tensors.map(async (t) => ({ name: t.name, type: t.type, shape: t.shape, data: await readGgufTensorBytes(seed, t.name, info) })),
        ),
      });
      expect(Buffer.compare(await readFile(out), await readFile(seed)), seed).toBe(0);
    }
  });

  it('stores F32 data verbatim and dequantizes other types through readGgufTensor', async () => {
    const data = new Prng(5).gaussianArray(512);
    const file = path.join(dir, 'values.gguf');
    await writeGguf(file, {
      metadata: {},
      tensors: [
        { name: 'f32', type: 'F32', shape: [256, 2], data },
        { name: 'q8', type: 'Q8_0', shape: [256, 2], data },
        { name: 'lazy', type: 'F16', shape: [512], data: async () => data },
      ],
    });
    expect(await readGgufTensor(file, 'f32')).toEqual(data);
    const q8 = await readGgufTensor(file, 'q8');
    const f16 = await readGgufTensor(file, 'lazy');
    for (let i = 0; i < data.length; i++) {
      expect(Math.abs(q8[i]! - data[i]!)).toBeLessThan(0.02);
      expect(Math.abs(f16[i]! - data[i]!)).toBeLessThanOrEqual(Math.abs(data[i]!) * 2 ** -11);
    }
    await expect(readGgufTensor(file, 'missing')).rejects.toThrow(/no tensor named 'missing'/);
  });

  it('refuses recognised but unsupported types with an error naming the type and the tensor', async () => {
    const file = path.join(dir, 'iq.gguf');
    await writeGguf(file, {
      metadata: {},
      tensors: [{ name: 'blk.0.ffn_down_exps.weight', type: 'IQ2_XXS', shape: [256], data: new Uint8Array(66) }],
    });
    const info = await readGgufInfo(file);
    expect(info.tensors[0]).toMatchObject({ type: 'IQ2_XXS', typeId: 16, bytes: 66 });
    const err = await readGgufTensor(file, 'blk.0.ffn_down_exps.weight').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsupportedTypeError);
    expect(String((err as Error).message)).toMatch(/IQ2_XXS/);
    expect(String((err as Error).message)).toMatch(/blk\.0\.ffn_down_exps\.weight/);
  });

  it('aborts a write and leaves no file behind', async () => {
    const file = path.join(dir, 'aborted.gguf');
    const controller = new AbortController();
    const tensors = Array.from({ length: 4 }, (_, i) => ({ name: `t${i}`, type: 'F32' as const, shape: [4], data: new Float32Array(4) }));
    const write = writeGguf(file, { metadata: {}, tensors }, {
      signal: controller.signal,
      onProgress: ({ tensorsWritten }) => tensorsWritten === 2 && controller.abort(),
    });
    await expect(write).rejects.toThrow(/abort/i);
    await expect(readFile(file)).rejects.toThrow(/ENOENT/);
  });

  it('rejects bad writer input with clear errors', async () => {
    const file = path.join(dir, 'bad.gguf');
    const t = (over: Partial<GgufTensorInput>): GgufTensorInput => ({ name: 'w', type: 'F32', shape: [4], data: new Float32Array(4), ...over });
    await expect(writeGguf(file, { metadata: {}, tensors: [t({ name: 'x'.repeat(64) })] })).rejects.toThrow(/1 to 63 bytes/);
    await expect(writeGguf(file, { metadata: {}, tensors: [t({}), t({})] })).rejects.toThrow(/duplicate tensor name 'w'/);
    await expect(writeGguf(file, { metadata: {}, tensors: [t({ type: 'Q4_K', shape: [100], data: new Float32Array(100) })] })).rejects.toThrow(
      /multiple of the Q4_K block size 256/,
    );
    await expect(writeGguf(file, { metadata: {}, tensors: [t({ shape: [5] })] })).rejects.toThrow(/needs 5 values, got 4/);
    await expect(writeGguf(file, { metadata: {}, tensors: [t({ shape: [1, 1, 1, 1, 4] })] })).rejects.toThrow(/1 to 4 dimensions/);
    await expect(writeGguf(file, { metadata: { k: { type: 'u8', value: 300 } }, tensors: [] })).rejects.toThrow(/300 is not a valid u8/);
    await expect(writeGguf(file, { metadata: { k: { type: 'array<i16>', value: [1, 1e6] } }, tensors: [] })).rejects.toThrow(
      /k\[1\]/,
    );
    await expect(writeGguf(file, { metadata: {}, tensors: [] }, { alignment: 48 })).rejects.toThrow(/power of two/);
    await expect(readFile(file)).rejects.toThrow(/ENOENT/);
  });
});

describe('readGgufInfo on bad input', () => {
  async function infoError(bytes: Uint8Array | string, name: string): Promise<GgufError> {
    const file = path.join(dir, name);
    await writeFile(file, bytes);
    const err = await readGgufInfo(file).catch((e: unknown) => e);
    expect(err, name).toBeInstanceOf(GgufError);
    return err as GgufError;
  }
  const le32 = (...values: number[]) => Buffer.from(new Uint32Array(values).buffer);

  it('names the offset and the problem', async () => {
    expect((await infoError('not a gguf at all', 'magic.gguf')).message).toMatch(/magic/i);
    expect((await infoError(le32(0x46554747, 1, 0, 0, 0, 0), 'v1.gguf')).message).toMatch(/v1|version 1/i);
    const bigEndian = await infoError(le32(0x46554747, 0x03000000, 0, 0, 0, 0), 'be.gguf');
    expect(bigEndian.message).toMatch(/endian/i);
    expect(bigEndian.offset).toBe(4);
    const truncated = await infoError(le32(0x46554747, 3, 0), 'trunc.gguf');
    expect(truncated.offset).toBeGreaterThanOrEqual(8);
    expect(truncated.path).toMatch(/trunc\.gguf$/);
    expect(truncated.message).toMatch(/trunc\.gguf/);
  });

  it('reports a missing file as an fs error, not a GgufError', async () => {
    const err = await readGgufInfo(path.join(dir, 'does-not-exist.gguf')).catch((e: unknown) => e);
    expect(err).not.toBeInstanceOf(GgufError);
    expect(String((err as Error).message)).toMatch(/does-not-exist\.gguf/);
  });

  it('rejects tensor data past the end of the file', async () => {
    const file = path.join(dir, 'short-data.gguf');
    await writeGguf(file, { metadata: {}, tensors: [{ name: 'w', type: 'F32', shape: [64], data: new Float32Array(64) }] });
    const bytes = await readFile(file);
    const err = await infoError(bytes.subarray(0, bytes.length - 1), 'short-data-cut.gguf');
    expect(err.message).toMatch(/'w'/);
  });
});
