/**
 * @module
 * The payments service as a process, so the lab can run instances beside the providers and kill
 * them: `node --conditions=keel-source service-process.ts --provider-a URL --provider-b URL
 * [--mode naive] [--db FILE|postgres://…] [--broker nats://…] [--port N] [--rows N]
 * [--exit-with-stdin]`. Prints one JSON line with its URL once listening; SIGTERM or SIGINT stops it
 * cleanly (requests in flight finish, the relay and consumers stop, the database closes) and exits 0.
 * With `--exit-with-stdin`, so does the end of its stdin: a parent that dies without stopping it
 * (killed, crashed) closes the pipe, and the instance does not outlive it.
 */
import { configFromArgs } from './config.ts';
import { buildService } from './service-app.ts';

const LIFELINE_FLAG = '--exit-with-stdin';
const args = process.argv.slice(2);
const lifeline = args.includes(LIFELINE_FLAG);
const service = await buildService(configFromArgs(args.filter((arg) => arg !== LIFELINE_FLAG)));
const url = await service.start();
process.stdout.write(`${JSON.stringify({ url, mode: service.config.mode, pid: process.pid })}\n`);

let exiting = false;
const shutdown = (reason: string) => {
  if (exiting) return;
  exiting = true;
  service.stop().then(
    () => process.exit(0),
    (error: unknown) => {
      process.stderr.write(`service stop after ${reason} failed: ${String(error)}\n`);
      process.exit(1);
    },
  );
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (lifeline) {
  process.stdin.once('end', () => shutdown('the end of stdin'));
  process.stdin.resume();
}
