import { memoryStore } from 'keel/idempotency';
import { runStoreConformance } from './store-conformance.ts';

runStoreConformance('memory', async () => ({ store: memoryStore(), close: async () => {} }));
