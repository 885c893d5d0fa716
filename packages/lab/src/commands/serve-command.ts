/**
 * @module
 * `keel serve`: the payments service and its two providers on this machine (see
 * `service/serve-command.ts`).
 */
import { SERVE_USAGE, serve } from '../service/serve-command.ts';
import type { Command } from './command.ts';

export const serveCommand: Command = {
  name: 'serve',
  summary: 'run the payments service and two payment providers on 127.0.0.1, with a demo user',
  usage: SERVE_USAGE,
  run: (argv) => serve(argv),
};
