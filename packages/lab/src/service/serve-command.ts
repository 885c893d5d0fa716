/**
 * @module
 * `keel serve`: the payments service and both payment providers on this machine, for trying Keel
 * by hand. The providers run as their own processes in lab mode (their fault API answers, so a
 * person can make provider A hang and watch the failover), with their ledgers in `--data` or a
 * temporary directory removed on exit; the service runs guarded by default on the embedded SQLite
 * file and in-process events. A demo user with a known password is signed up, and the URLs and a
 * sample `curl` sequence are printed. Ctrl-C (SIGINT) or SIGTERM stops the service first — requests
 * in flight finish, the relay, the consumers and the jobs stop — then the providers, and exits 0.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type RunningProvider, startProvider } from '../providers/provider-launcher.ts';
import { InvalidServiceConfigError, type ServiceConfig, serviceConfig } from './config.ts';
import { buildService, type Service } from './service-app.ts';

/** The user `keel serve` signs up, so the sample requests work as printed. */
export const DEMO_USER = Object.freeze({ email: 'demo@example.com', password: 'keel-demo-password' });

export const SERVE_USAGE = `Usage: keel serve [options]

Starts the payments service and two payment providers (lab mode) on 127.0.0.1.

Options:
  --mode guarded|naive   the service's configuration (default guarded)
  --db PATH|URL          sqlite file (default <data>/payments.db) or postgres://…
  --broker URL           in-process (default), nats://… or amqp://…
  --port N               the service's port (default 3000; 0 picks a free one)
  --rows N               sales rows seeded for the report (default 300000)
  --data DIR             keep the providers' ledgers and the database here
                         (default: a temporary directory, removed on exit)
`;

/** Where `keel serve` writes what it prints. */
export interface ServeOutput {
  out(text: string): void;
  err(text: string): void;
}

const processOutput: ServeOutput = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
};

function readOptions(argv: readonly string[]) {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      mode: { type: 'string' },
      db: { type: 'string' },
      broker: { type: 'string' },
      port: { type: 'string', default: '3000' },
      rows: { type: 'string' },
      data: { type: 'string' },
    },
    strict: true,
  });
  const number = (flag: string, text: string | undefined): number | undefined => {
    if (text === undefined) return undefined;
    const value = Number(text);
    if (text.trim() === '' || Number.isNaN(value)) {
      throw new InvalidServiceConfigError(`--${flag}`, `must be a number, got ${JSON.stringify(text)}`);
    }
    return value;
  };
  return {
    mode: values.mode,
    db: values.db,
    broker: values.broker,
    port: number('port', values.port),
    rows: number('rows', values.rows),
    data: values.data,
  };
}

/** The banner: where everything listens and a charge to try, as `curl` commands. */
export function serveBanner(
  service: { url: string; config: ServiceConfig },
  providers: readonly RunningProvider[],
  data: { path: string; temporary: boolean },
): string {
  const { url, config } = service;
  const login = JSON.stringify({ email: DEMO_USER.email, password: DEMO_USER.password });
  const field = (name: string) => `node -pe 'JSON.parse(require("fs").readFileSync(0, "utf8")).${name}'`;
  const lines = [
    `keel serve: the payments service (${config.mode}) and two payment providers`,
    '',
    `  service      ${url}`,
    ...providers.map(
      (p) => `  provider ${p.name}   ${p.url}   (pid ${p.pid}; faults: PUT ${p.url}/__faults)`,
    ),
    `  metrics      ${url}/metrics`,
    `  health       ${url}/health/ready`,
    `  data         ${data.path}${data.temporary ? ' (removed on exit)' : ''}`,
    `  demo user    ${DEMO_USER.email} / ${DEMO_USER.password}`,
    '',
    'Try a charge:',
    `  URL=${url}`,
    `  TOKEN=$(curl -s -X POST $URL/login -H 'content-type: application/json' -d '${login}' | ${field('token')})`,
    `  ORDER=$(curl -s -X POST $URL/orders -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"amount":2500,"currency":"eur"}' | ${field('id')})`,
    `  KEY=$(node -p 'crypto.randomUUID()')`,
    '  curl -i -X POST $URL/orders/$ORDER/charge -H "authorization: Bearer $TOKEN" -H "Idempotency-Key: $KEY"',
    '  # the same command again answers with the stored payment and Idempotent-Replayed: true',
    `  curl -s $URL/orders/$ORDER/invoices -H "authorization: Bearer $TOKEN"`,
    '',
    'Ctrl-C stops everything.',
    '',
  ];
  return lines.join('\n');
}

async function signUpDemoUser(service: Service): Promise<void> {
  const response = await service.app.inject({ method: 'POST', url: '/signup', payload: DEMO_USER });
  // 409: a kept `--data` directory has the demo user from an earlier run.
  if (response.statusCode !== 201 && response.statusCode !== 409) {
    throw new Error(`signing up the demo user answered ${response.statusCode}: ${response.body}`);
  }
}

/**
 * Runs `keel serve` until SIGINT or SIGTERM; resolves with the exit code.
 *
 * @example
 * process.exitCode = await serve(['--port', '0', '--rows', '1000']);
 */
export async function serve(argv: readonly string[], output: ServeOutput = processOutput): Promise<number> {
  let options: ReturnType<typeof readOptions>;
  try {
    options = readOptions(argv);
  } catch (error) {
    output.err(`keel serve: ${error instanceof Error ? error.message : String(error)}\n\n${SERVE_USAGE}`);
    return 2;
  }

  // Listen for the signal from the start: a Ctrl-C during start-up stops as soon as it is done.
  let signalled: NodeJS.Signals | undefined;
  let onSignal: (signal: NodeJS.Signals) => void = (signal) => {
    signalled = signal;
  };
  const handler = (signal: NodeJS.Signals) => onSignal(signal);
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);

  const temporary = options.data === undefined;
  const dataPath = options.data ?? mkdtempSync(join(tmpdir(), 'keel-serve-'));
  mkdirSync(dataPath, { recursive: true });
  const providers: RunningProvider[] = [];
  let service: Service | undefined;
  let code = 0;
  try {
    providers.push(
      ...(await Promise.all(
        ['a', 'b'].map((name) =>
          startProvider({
            name,
            ledgerPath: join(dataPath, `provider-${name}.db`),
            lab: true,
            inheritStderr: true,
          }),
        ),
      )),
    );
    const [a, b] = providers as [RunningProvider, RunningProvider];
    const config = serviceConfig({
      ...(options.mode !== undefined && { mode: options.mode }),
      ...(options.broker !== undefined && { broker: options.broker }),
      ...(options.port !== undefined && { port: options.port }),
      ...(options.rows !== undefined && { rows: options.rows }),
      db: options.db ?? join(dataPath, 'payments.db'),
      providerA: a.url,
      providerB: b.url,
    });
    if (signalled === undefined) {
      output.err(`keel serve: seeding ${config.salesRows} sales rows and starting the service…\n`);
      service = await buildService(config);
      const url = await service.start();
      await signUpDemoUser(service);
      if (signalled === undefined) {
        output.out(serveBanner({ url, config }, providers, { path: dataPath, temporary }));
        await new Promise<void>((resolve) => {
          onSignal = (signal) => {
            signalled = signal;
            resolve();
          };
        });
      }
    }
    output.err(`keel serve: ${signalled ?? 'stop'} received, stopping the service, then the providers\n`);
  } catch (error) {
    output.err(
      `keel serve: ${error instanceof InvalidServiceConfigError || error instanceof Error ? error.message : String(error)}\n`,
    );
    code = error instanceof InvalidServiceConfigError ? 2 : 1;
  } finally {
    // A second Ctrl-C while stopping gives up waiting.
    onSignal = () => process.exit(130);
    try {
      await service?.stop();
    } finally {
      await Promise.allSettled(providers.map((provider) => provider.stop()));
      if (temporary) rmSync(dataPath, { recursive: true, force: true });
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    }
  }
  return code;
}
