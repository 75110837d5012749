import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Every test file's temporary files live under one root that is removed when the run ends.
    globalSetup: ['test/setup/temp-root.ts'],
    // Native addons and llama.cpp run in child processes, not worker threads.
    pool: 'forks',
    testTimeout: 300_000,
    hookTimeout: 300_000,
    // Two cores: two test files at a time, each using native threads.
    maxWorkers: 2,
    // CI reads the counts from the JSON report (.ci/run prints "N passed, N failed").
    reporters: process.env.CI ? ['default', ['json', { outputFile: 'test-results/vitest.json' }]] : ['default'],
  },
});
