/**
 * ggml tensor types as stored in GGUF files: on-disk ids and block geometry. Mirrors
 * cpp/quant/ggml_types.cc (a test checks the two tables agree).
 */

/** On-disk ggml type ids. */
export const GgmlType = {
  F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q8_1: 9,
  Q2_K: 10, Q3_K: 11, Q4_K: 12, Q5_K: 13, Q6_K: 14, Q8_K: 15,
  IQ2_XXS: 16, IQ2_XS: 17, IQ3_XXS: 18, IQ1_S: 19, IQ4_NL: 20, IQ3_S: 21, IQ2_S: 22, IQ4_XS: 23,
  I8: 24, I16: 25, I32: 26, I64: 27, F64: 28, IQ1_M: 29, BF16: 30,
  TQ1_0: 34, TQ2_0: 35, MXFP4: 39, NVFP4: 40, Q1_0: 41, Q2_0: 42,
} as const;

/** Name of a ggml type, as llama.cpp prints it (`'Q4_K'`). */
export type GgmlTypeName = keyof typeof GgmlType;

/** Block geometry: `blockSize` elements are stored in `typeSize` bytes. */
export interface GgmlTypeGeometry {
  readonly id: number;
  readonly name: GgmlTypeName;
  readonly blockSize: number;
  readonly typeSize: number;
}

const geometry: Record<GgmlTypeName, [blockSize: number, typeSize: number]> = {
  F32: [1, 4], F16: [1, 2], Q4_0: [32, 18], Q4_1: [32, 20], Q5_0: [32, 22], Q5_1: [32, 24],
  Q8_0: [32, 34], Q8_1: [32, 36], Q2_K: [256, 84], Q3_K: [256, 110], Q4_K: [256, 144],
  Q5_K: [256, 176], Q6_K: [256, 210], Q8_K: [256, 292], IQ2_XXS: [256, 66], IQ2_XS: [256, 74],
  IQ3_XXS: [256, 98], IQ1_S: [256, 50], IQ4_NL: [32, 18], IQ3_S: [256, 110], IQ2_S: [256, 82],
  IQ4_XS: [256, 136], I8: [1, 1], I16: [1, 2], I32: [1, 4], I64: [1, 8], F64: [1, 8],
  IQ1_M: [256, 56], BF16: [1, 2], TQ1_0: [256, 54], TQ2_0: [256, 66], MXFP4: [32, 17],
  NVFP4: [64, 36], Q1_0: [128, 18], Q2_0: [64, 18],
};

const byId = new Map<number, GgmlTypeGeometry>();
for (const [name, id] of Object.entries(GgmlType) as [GgmlTypeName, number][]) {
  const [blockSize, typeSize] = geometry[name];
  byId.set(id, Object.freeze({ id, name, blockSize, typeSize }));
}

/** Geometry of a type given by name or id; throws a RangeError for an unknown one. */
export function ggmlTypeGeometry(type: GgmlTypeName | number): GgmlTypeGeometry {
  const id = typeof type === 'number' ? type : GgmlType[type];
  const g = id === undefined ? undefined : byId.get(id);
  if (!g) throw new RangeError(`unknown ggml type ${JSON.stringify(type)}`);
  return g;
}

/** Bytes that `elementCount` elements of `type` take; the count must be a multiple of the block size. */
export function ggmlTypeByteSize(type: GgmlTypeName | number, elementCount: number): number {
  const g = ggmlTypeGeometry(type);
  if (!Number.isSafeInteger(elementCount) || elementCount < 0 || elementCount % g.blockSize !== 0) {
    throw new RangeError(
      `${elementCount} elements cannot be stored as ${g.name}: the count must be a multiple of its block size ${g.blockSize}`,
    );
  }
  return (elementCount / g.blockSize) * g.typeSize;
}
