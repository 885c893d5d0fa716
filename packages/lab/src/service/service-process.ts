/**
 * @module
 * The payments service as a process, so the lab can run instances beside the providers and kill
 * them: `node --conditions=keel-source service-process.ts --provider-a URL --provider-b URL
 * [--mode naive] [--db FILE|postgres://…] [--broker nats://…] [--port N] [--rows N]`. Prints one
 * JSON line with its URL once listening; SIGTERM or SIGINT stops it cleanly (requests in flight
 * finish, the relay and consumers stop, the database closes) and exits 0.
 */
import { configFromArgs } from './config.ts';
import { buildService } from './service-app.ts';

const service = await buildService(configFromArgs(process.argv.slice(2)));
const url = await service.start();
process.stdout.write(`${JSON.stringify({ url, mode: service.config.mode, pid: process.pid })}\n`);

let exiting = false;
const shutdown = (signal: NodeJS.Signals) => {
  if (exiting) return;
  exiting = true;
  service.stop().then(
    () => process.exit(0),
    (error: unknown) => {
      process.stderr.write(`service stop after ${signal} failed: ${String(error)}\n`);
      process.exit(1);
    },
  );
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
