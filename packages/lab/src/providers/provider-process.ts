#!/usr/bin/env node
/**
 * @module
 * A payment provider as its own process, so the lab's providers fail, stall and restart apart from
 * the service that calls them. Prints one JSON line, `{"name":…,"url":…}`, once listening; closes
 * the server and its ledger on SIGTERM or SIGINT.
 *
 * node --conditions=keel-source packages/lab/src/providers/provider-process.ts \
 *   --name a --port 0 --ledger /tmp/a.db --lab [--seed 7] [--host 127.0.0.1] [--log] [--exit-with-stdin]
 */
import { parseArgs } from 'node:util';
import { buildProviderApp } from './provider-app.ts';

const USAGE = `Usage: provider-process --name NAME --ledger PATH [--port 0] [--host 127.0.0.1] [--lab] [--seed N]
                        [--log] [--exit-with-stdin]\n`;

function parseIntegerFlag(flag: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || text.trim() === '')
    throw new Error(`--${flag} must be an integer, got '${text}'`);
  return value;
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      name: { type: 'string' },
      ledger: { type: 'string' },
      port: { type: 'string', default: '0' },
      host: { type: 'string', default: '127.0.0.1' },
      lab: { type: 'boolean', default: false },
      seed: { type: 'string' },
      log: { type: 'boolean', default: false },
      // The launcher keeps stdin open as a lifeline: if it dies, stdin ends and so does the provider.
      'exit-with-stdin': { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.name === undefined || values.ledger === undefined) {
    process.stderr.write(USAGE);
    return 2;
  }
  const app = buildProviderApp({
    name: values.name,
    ledgerPath: values.ledger,
    lab: values.lab,
    seed: parseIntegerFlag('seed', values.seed, 1),
    logger: values.log,
  });
  let closing: Promise<void> | undefined;
  const shutdown = () => {
    closing ??= app.close();
    return closing;
  };
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => void shutdown());
  if (values['exit-with-stdin']) {
    process.stdin.once('end', () => void shutdown());
    process.stdin.resume();
  }
  await app.listen({ host: values.host, port: parseIntegerFlag('port', values.port, 0) });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  const host = values.host.includes(':') ? `[${values.host}]` : values.host;
  process.stdout.write(`${JSON.stringify({ name: values.name, url: `http://${host}:${port}` })}\n`);
  await new Promise<void>((resolve) => app.server.once('close', resolve));
  await closing;
  // The lifeline is a handle of its own; let it go so the process can end.
  process.stdin.pause();
  process.stdin.destroy();
  return 0;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (error) {
  process.stderr.write(`provider: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
