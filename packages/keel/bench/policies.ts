/**
 * The resilience core against its peers, in one process and one run: bare `await fn()`, a circuit
 * breaker alone (Keel, cockatiel, opossum), and a four-policy pipeline (Keel vs cockatiel's `wrap`).
 *
 * Two figures per task. "per call": tinybench times each awaited call, as the reference figures in
 * the targets were measured; the harness's own cost (~80 ns) is inside every task alike. "batched":
 * each tinybench iteration makes BATCH awaited calls, so the harness cost vanishes and what remains
 * is the policy's own cost. The targets are judged on the per-call figures.
 *
 * The Keel pipeline runs twice: with `timeout()`, which hands the deadline and signal to the function
 * as cockatiel's timeout hands over its signal, and with `deadline()` in its place, which also writes
 * the deadline to async context for nested calls (one AsyncLocalStorage.run per call) — shown so
 * the cost of that choice is measured, not guessed.
 *
 *   npm run bench            tables with ns per call, ratios and the targets
 *   npm run bench -- --json  the same as one JSON document
 */
import {
  ConsecutiveBreaker,
  circuitBreaker as cockatielBreaker,
  bulkhead as cockatielBulkhead,
  retry as cockatielRetry,
  timeout as cockatielTimeout,
  ExponentialBackoff,
  handleAll,
  TimeoutStrategy,
  wrap,
} from 'cockatiel';
import { bulkhead, circuitBreaker, deadline, pipeline, retry, timeout } from 'keel';
import OpossumBreaker from 'opossum';
import { Bench } from 'tinybench';

const BATCH = 200;
const json = process.argv.includes('--json');
const time = Number(process.env.BENCH_TIME_MS ?? 1_000);

const work = async (): Promise<number> => 1;

const keelBreaker = circuitBreaker({ name: 'bench' });
const keelPipeline = pipeline(
  bulkhead({ maxConcurrent: 100, maxQueued: 100 }),
  timeout({ ms: 1_000 }),
  retry({ maxAttempts: 3, idempotent: true }),
  circuitBreaker({ name: 'bench-pipeline' }),
);
const keelPipelineAmbient = pipeline(
  bulkhead({ maxConcurrent: 100, maxQueued: 100 }),
  deadline({ ms: 1_000 }),
  retry({ maxAttempts: 3, idempotent: true }),
  circuitBreaker({ name: 'bench-pipeline-ambient' }),
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
  'keel pipeline, deadline()': () => keelPipelineAmbient.execute(work),
  'cockatiel wrap': () => cockatielWrap.execute(work),
};

/** Median nanoseconds per call of every task, `calls` awaited calls per tinybench iteration. */
async function measure(calls: number): Promise<Record<string, number>> {
  const bench = new Bench({ time, warmup: true, warmupTime: 300 });
  for (const [name, call] of Object.entries(tasks)) {
    if (calls === 1) bench.add(name, async () => void (await call()));
    else
      bench.add(name, async () => {
        for (let i = 0; i < calls; i++) await call();
      });
  }
  await bench.run();
  const out: Record<string, number> = {};
  for (const task of bench.tasks) {
    const result = task.result;
    if (result.state !== 'completed') throw new Error(`${task.name} did not complete: ${result.state}`);
    out[task.name] = (result.latency.mean * 1e6) / calls;
  }
  return out;
}

const nsPerCall = await measure(1);
const nsBatched = await measure(BATCH);
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
  nsBatched: Object.fromEntries(Object.entries(nsBatched).map(([k, v]) => [k, Math.round(v)])),
  targets,
  pass: targets.every((t) => t.pass),
};

if (json) {
  console.log(JSON.stringify(summary, null, 2));
} else {
  console.log(`Keel policies vs peers — Node ${process.version}, mean ns per awaited call\n`);
  const bare = ns('bare await');
  const bareBatched = nsBatched['bare await'] as number;
  console.table(
    Object.entries(nsPerCall).map(([task, v]) => ({
      task,
      'per call': Math.round(v),
      '× bare': Number((v / bare).toFixed(2)),
      batched: Math.round(nsBatched[task] as number),
      '× bare (batched)': Number(((nsBatched[task] as number) / bareBatched).toFixed(2)),
    })),
  );
  console.table(targets.map((t) => ({ target: t.name, ratio: t.ratio, result: t.pass ? 'PASS' : 'MISS' })));
}
process.exitCode = summary.pass ? 0 : 1;
