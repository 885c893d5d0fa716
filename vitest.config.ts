import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: { conditions: ['keel-source'] },
  ssr: { resolve: { conditions: ['keel-source'] } },
  test: {
    include: ['packages/*/test/**/*.test.ts'],
    testTimeout: 20_000,
  },
});
