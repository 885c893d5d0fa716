import { configDefaults, defineConfig } from 'vitest/config';

/**
 * The whole failure lab, run as `keel lab --quick`: it measures timing bars (naive vs guarded), so
 * it runs alone, one file at a time, after the rest of the suite has finished with the cores.
 */
const LAB_RUN = 'packages/lab/test/lab-run/**/*.test.ts';

export default defineConfig({
  resolve: { conditions: ['keel-source'] },
  ssr: { resolve: { conditions: ['keel-source'] } },
  test: {
    testTimeout: 20_000,
    projects: [
      {
        extends: true,
        test: {
          name: 'suite',
          include: ['packages/*/test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, LAB_RUN],
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'lab',
          include: [LAB_RUN],
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
