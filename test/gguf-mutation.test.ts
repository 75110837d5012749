import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { GgufError, readGgufInfo } from '../lib/index.js';
import { MUTANT_COUNT, writeMutantCorpus, writeSeedFiles } from './helpers/gguf-corpus.js';
import { tempDir } from './helpers/tmp.js';

describe('GGUF reader under corruption', () => {
  it(`loads or throws GgufError for each of ${MUTANT_COUNT} corrupted files, never crashing`, async () => {
    const dir = await tempDir();
    const seeds = await writeSeedFiles(path.join(dir, 'seeds'));
    for (const seed of seeds) await expect(readGgufInfo(seed)).resolves.toBeDefined();
    const mutants = await writeMutantCorpus(path.join(dir, 'mutants'), seeds, MUTANT_COUNT);
    let loaded = 0;
    let rejected = 0;
    const unexpected: string[] = [];
    for (const file of mutants) {
      try {
        await readGgufInfo(file);
        loaded++;
      } catch (error) {
        if (error instanceof GgufError && typeof error.offset === 'number') rejected++;
        else unexpected.push(`${path.basename(file)}: ${String(error)}`);
      }
    }
    expect(unexpected).toEqual([]);
    expect(loaded + rejected).toBe(MUTANT_COUNT);
    // A corpus that the reader always accepted (or always refused) would test nothing.
    expect(rejected).toBeGreaterThan(MUTANT_COUNT / 2);
    expect(loaded).toBeGreaterThan(0);
  });
});
