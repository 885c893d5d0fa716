/**
 * What idempotency costs a Fastify route that inserts one row, measured with autocannon in one run:
 * the bare route, the same route with a new Idempotency-Key per request, and replays of keys already
 * answered — on sqlite (node:sqlite, WAL) and on PostgreSQL when DATABASE_URL is set. The server runs
 * in its own process so the load generator does not share its event loop.
 *
 * New keys run twice: with the plugin as registered, which stores the response after the handler's
 * own commit (`newKeys`, which the targets apply to), and in the atomic configuration, where the
 * handler inserts its row and stores the response with `completeInTransaction` in one transaction
 * (`newKeysInTransaction`, no target: it shows what that atomicity costs).
 *
 *   npm run bench:idempotency            a table with requests/s and ratios
 *   npm run bench:idempotency -- --json  the same as JSON
 *
 * BENCH_CONNECTIONS (20), BENCH_SECONDS (2 per load) and BENCH_ROUNDS (5) change the load.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

const json = process.argv.includes('--json');
const duration = Number(process.env.BENCH_SECONDS ?? 2);
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 20);
const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const body = JSON.stringify({ amount: 1_500 });

async function startServer(backend: string): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(
    process.execPath,
    ['--conditions=keel-source', 'bench/idempotency-server.ts', backend],
    {
      cwd: packageRoot,
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const [chunk] = (await once(child.stdout as NodeJS.ReadableStream, 'data')) as [Buffer];
  return { port: Number(chunk.toString().trim()), child };
}

async function load(url: string, key: () => string | undefined): Promise<number> {
  const result = await autocannon({
    url,
    method: 'POST',
    connections,
    duration,
    headers: { 'content-type': 'application/json', 'x-user': 'bench' },
    body,
    requests: [
      {
        setupRequest: (request) => {
          const k = key();
          const headers = { ...request.headers };
          if (k !== undefined) headers['idempotency-key'] = k;
          return { ...request, headers };
        },
      },
    ],
  });
  const bad = result.non2xx + result.errors + result.timeouts;
  if (bad > 0)
    throw new Error(`${url}: ${bad} requests failed (${result.non2xx} non-2xx, ${result.errors} errors)`);
  return result.requests.average;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

async function measure(backend: string) {
  const { port, child } = await startServer(backend);
  try {
    const base = `http://127.0.0.1:${port}`;
    // Warm up both routes, and answer the keys the replay run will reuse.
    const replayKeys = Array.from({ length: 200 }, () => randomUUID());
    for (const k of replayKeys) {
      await fetch(`${base}/keyed`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-user': 'bench', 'idempotency-key': k },
        body,
      });
    }
    await load(`${base}/bare`, () => undefined);
    // The three loads take turns, round after round, and each keeps its median: a machine whose
    // background load drifts during the run shifts all three alike instead of one of them.
    let i = 0;
    const runs = {
      bare: [] as number[],
      newKeys: [] as number[],
      newKeysInTransaction: [] as number[],
      replays: [] as number[],
    };
    for (let round = 0; round < rounds; round++) {
      runs.bare.push(await load(`${base}/bare`, () => undefined));
      runs.newKeys.push(await load(`${base}/keyed`, () => randomUUID()));
      runs.newKeysInTransaction.push(await load(`${base}/keyed-tx`, () => randomUUID()));
      runs.replays.push(await load(`${base}/keyed`, () => replayKeys[i++ % replayKeys.length]));
    }
    return {
      backend,
      bare: median(runs.bare),
      newKeys: median(runs.newKeys),
      newKeysInTransaction: median(runs.newKeysInTransaction),
      replays: median(runs.replays),
    };
  } finally {
    child.kill('SIGTERM');
    await once(child, 'exit');
  }
}

const backends = process.env.DATABASE_URL ? ['sqlite', 'postgres'] : ['sqlite'];
const results = [];
for (const backend of backends) results.push(await measure(backend));

const targets = results.flatMap((r) => [
  {
    name: `${r.backend}: new keys ≥ ${r.backend === 'sqlite' ? 60 : 50} % of the bare route`,
    ratio: r.newKeys / r.bare,
    pass: r.newKeys / r.bare >= (r.backend === 'sqlite' ? 0.6 : 0.5),
  },
  {
    name: `${r.backend}: replays ≥ 100 % of the bare route`,
    ratio: r.replays / r.bare,
    pass: r.replays / r.bare >= 1,
  },
]);
const summary = {
  node: process.version,
  connections,
  durationSeconds: duration,
  rounds,
  requestsPerSecond: results.map((r) => ({
    backend: r.backend,
    bare: Math.round(r.bare),
    newKeys: Math.round(r.newKeys),
    newKeysInTransaction: Math.round(r.newKeysInTransaction),
    replays: Math.round(r.replays),
  })),
  /** The response stored in the handler's transaction: no target, for comparison. */
  newKeysInTransactionRatio: results.map((r) => ({
    backend: r.backend,
    ratio: Number((r.newKeysInTransaction / r.bare).toFixed(2)),
  })),
  targets: targets.map((t) => ({ ...t, ratio: Number(t.ratio.toFixed(2)) })),
  pass: targets.every((t) => t.pass),
};
if (json) console.log(JSON.stringify(summary, null, 2));
else {
  console.log(
    `Idempotency on a one-row insert route — Node ${process.version}, ${connections} connections, median of ${rounds} interleaved rounds of ${duration} s\n`,
  );
  console.table(summary.requestsPerSecond);
  console.log(
    'newKeys: the plugin stores the response after the handler; newKeysInTransaction: the handler stores it in its own transaction\n',
  );
  console.table([
    ...summary.targets.map((t) => ({ target: t.name, ratio: t.ratio, result: t.pass ? 'PASS' : 'MISS' })),
    ...summary.newKeysInTransactionRatio.map((r) => ({
      target: `${r.backend}: new keys stored in the handler’s transaction (no target)`,
      ratio: r.ratio,
      result: '',
    })),
  ]);
}
process.exitCode = summary.pass ? 0 : 1;
