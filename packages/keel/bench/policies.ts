/**
 * The resilience core against its peers, in one process and one run: bare `await fn()`, a circuit
 * breaker alone (Keel, cockatiel, opossum), and a four-policy pipeline (Keel vs cockatiel's `wrap`).
 * Each tinybench iteration makes `BATCH` awaited calls so the harness's own per-iteration cost does
 * not blur nanosecond figures.
 *
 *   npm run bench            a table with ns per call, ratios and the targets
 *   npm run bench -- --json  the same as one JSON document
 */
import {
  bulkhead as cockatielBulkhead,
  circuitBreaker as cockatielBreaker,
  ConsecutiveBreaker,
  ExponentialBackoff,
  handleAll,
  retry as cockatielRetry,
  TimeoutStrategy,
  timeout as cockatielTimeout,
  wrap,
} from 'cockatiel';
import { bulkhead, circuitBreaker, pipeline, retry, timeout } from 'keel';
import OpossumBreaker from 'opossum';
import { Bench } from 'tinybench';

const BATCH = 1_000;
const json = process.argv.includes('--json');
const time = Number(process.env.BENCH_TIME_MS ?? 1_500);

const work = async (): Promise<number> => 1;

const keelBreaker = circuitBreaker({ name: 'bench' });
const keelPipeline = pipeline(
  bulkhead({ maxConcurrent: 100, maxQueued: 100 }),
  timeout({ ms: 1_000 }),
  retry({ maxAttempts: 3, idempotent: true }),
  circuitBreaker({ name: 'bench-pipeline' }),
);

const cockatielBreakerOnly = cockatielBreaker(handleAll, {
  halfOpenAfter: 10_000,
  breaker: new ConsecutiveBreaker(5),
});
const cockatielWrap = wrap(
  cockatielBulkhead(100, 100),
  cockatielTimeout(1_000, TimeoutStrategy.Cooperative),
  cockatielRetry(handleAll, { maxAttempts: 3, backoff: new ExponentialBackoff() }),
  cockatielBreaker(handleAll, { halfOpenAfter: 10_000, breaker: new ConsecutiveBreaker(5) }),
);
// The breaker alone: opossum's own per-call timeout would add a setTimeout, so it is turned off.
const opossum = new OpossumBreaker(work, { timeout: false, resetTimeout: 10_000 });

const tasks: Record<string, () => Promise<unknown>> = {
  'bare await': () => work(),
  'keel breaker': () => keelBreaker.execute(work),
  'cockatiel breaker': () => cockatielBreakerOnly.execute(work),
  'opossum breaker': () => opossum.fire(),
  'keel pipeline': () => keelPipeline.execute(work),
  'cockatiel wrap': () => cockatielWrap.execute(work),
};

const bench = new Bench({ time, warmup: true, warmupTime: 300 });
for (const [name, call] of Object.entries(tasks)) {
  bench.add(name, async () => {
    for (let i = 0; i < BATCH; i++) await call();
  });
}
await bench.run();

const nsPerCall: Record<string, number> = {};
for (const task of bench.tasks) {
  const result = task.result;
  if (result.state !== 'completed') throw new Error(`${task.name} did not complete: ${result.state}`);
  nsPerCall[task.name] = (result.latency.p50 * 1e6) / BATCH;
}
const ns = (name: string): number => nsPerCall[name] as number;

const targets = [
  {
    name: 'pipeline ≥ 8× faster than cockatiel wrap',
    ratio: ns('cockatiel wrap') / ns('keel pipeline'),
    pass: (r: number) => r >= 8,
  },
  {
    name: 'pipeline within 5× of bare await',
    ratio: ns('keel pipeline') / ns('bare await'),
    pass: (r: number) => r <= 5,
  },
  {
    name: 'breaker no slower than cockatiel',
    ratio: ns('cockatiel breaker') / ns('keel breaker'),
    pass: (r: number) => r >= 1,
  },
  {
    name: 'breaker ≥ 2× faster than opossum',
    ratio: ns('opossum breaker') / ns('keel breaker'),
    pass: (r: number) => r >= 2,
  },
].map((t) => ({ name: t.name, ratio: Number(t.ratio.toFixed(2)), pass: t.pass(t.ratio) }));

const summary = {
  node: process.version,
  batch: BATCH,
  nsPerCall: Object.fromEntries(Object.entries(nsPerCall).map(([k, v]) => [k, Math.round(v)])),
  targets,
  pass: targets.every((t) => t.pass),
};

if (json) {
  console.log(JSON.stringify(summary, null, 2));
} else {
  console.log(`Keel policies vs peers — Node ${process.version}, median of batches of ${BATCH} calls\n`);
  const bare = ns('bare await');
  console.table(
    Object.entries(nsPerCall).map(([task, v]) => ({
      task,
      'ns/call': Math.round(v),
      '× bare await': Number((v / bare).toFixed(2)),
    })),
  );
  console.table(targets.map((t) => ({ target: t.name, ratio: t.ratio, result: t.pass ? 'PASS' : 'MISS' })));
}
process.exitCode = summary.pass ? 0 : 1;
