import { describe, expect, it } from 'vitest';
import {
  CpuUnsupportedError,
  dequantize,
  dequantizeSync,
  getCpuInfo,
  getGgmlTypeSupport,
  ggmlTypeGeometry,
  quantize,
  quantizeSync,
  type GgmlTypeName,
} from '../lib/index.js';
import { Prng } from './helpers/prng.js';

// Relative RMS error bounds of quantize → dequantize on standard-normal data, per type. They sit
// above what the formats give (bits per weight decide it) with headroom for the data; the native
// test (test/native/test_quant.cc) holds the tighter, measured table.
const RELATIVE_RMSE_BOUND: Partial<Record<GgmlTypeName, number>> = {
  F32: 0,
  F16: 0.001,
  BF16: 0.005,
  Q8_0: 0.01,
  Q8_1: 0.01,
  Q8_K: 0.01,
  Q6_K: 0.04,
  Q5_0: 0.06,
  Q5_1: 0.06,
  Q5_K: 0.06,
  Q4_0: 0.12,
  Q4_1: 0.12,
  Q4_K: 0.12,
  MXFP4: 0.2,
  Q3_K: 0.25,
  Q2_K: 0.45,
};

function relativeRmse(a: Float32Array, b: Float32Array): number {
  let err = 0;
  let ref = 0;
  for (let i = 0; i < a.length; i++) {
    err += (a[i]! - b[i]!) ** 2;
    ref += a[i]! ** 2;
  }
  return Math.sqrt(err / ref);
}

const support = getGgmlTypeSupport();
const quantizable = support.filter((t) => t.canQuantize).map((t) => t.name);

describe('quant formats', () => {
  it('can quantize at least the types the GGUF writer promises', () => {
    for (const t of ['F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_K', 'Q5_K', 'Q6_K', 'MXFP4'] as const) expect(quantizable).toContain(t);
    const readable = support.filter((t) => t.canDequantize).map((t) => t.name);
    for (const t of ['F32', 'F16', 'BF16', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'Q8_K', 'MXFP4'] as const) {
      expect(readable).toContain(t);
    }
  });

  it('agrees with the TypeScript type table', () => {
    for (const t of support) {
      const g = ggmlTypeGeometry(t.name);
      expect([g.id, g.blockSize, g.typeSize], t.name).toEqual([t.id, t.blockSize, t.typeSize]);
    }
  });

  it.each(quantizable)('%s round-trips within its error bound', async (type) => {
    const bound = RELATIVE_RMSE_BOUND[type];
    expect(bound, `no bound stated for ${type}`).toBeDefined();
    const data = new Prng(11).gaussianArray(256 * 16);
    const bytes = await quantize(type, data);
    expect(bytes.length).toBe((data.length / ggmlTypeGeometry(type).blockSize) * ggmlTypeGeometry(type).typeSize);
    const back = await dequantize(type, bytes, data.length);
    expect(relativeRmse(data, back)).toBeLessThanOrEqual(bound!);
  });

  it.each(quantizable)('%s: every SIMD level this CPU runs equals the scalar reference', (type) => {
    const data = new Prng(13).gaussianArray(256 * 4);
    data[5] = 40; // an outlier moves block scales
    const scalarBytes = quantizeSync(type, data, { isa: 'scalar' });
    const scalarValues = dequantizeSync(type, scalarBytes, data.length, { isa: 'scalar' });
    for (const isa of getCpuInfo().supported) {
      expect(Buffer.compare(quantizeSync(type, data, { isa }), scalarBytes), `${type} quantize ${isa}`).toBe(0);
      expect(dequantizeSync(type, scalarBytes, data.length, { isa }), `${type} dequantize ${isa}`).toEqual(scalarValues);
    }
  });

  it('reports the CPU and refuses a level it lacks with a typed error, not SIGILL', () => {
    const info = getCpuInfo();
    expect(info.supported).toContain('scalar');
    expect(info.supported).toContain(info.best);
    const missing = (['avx2', 'avx512', 'neon'] as const).filter((l) => !info.supported.includes(l));
    expect(missing.length).toBeGreaterThan(0); // no CPU runs both x86 and ARM kernels
    for (const isa of missing) {
      expect(() => quantizeSync('Q8_0', new Float32Array(32), { isa }), isa).toThrow(CpuUnsupportedError);
    }
  });

  it('validates sizes and types', () => {
    expect(() => quantizeSync('Q4_K', new Float32Array(100))).toThrow(RangeError);
    expect(() => dequantizeSync('Q8_0', new Uint8Array(33), 32)).toThrow(/34 bytes/);
    expect(() => dequantizeSync('IQ2_XXS', new Uint8Array(66), 256)).toThrow(/IQ2_XXS/);
    expect(() => quantizeSync('Q8_0', new Float32Array(32), { isa: 'sse9' as never })).toThrow(/sse9/);
  });
});
