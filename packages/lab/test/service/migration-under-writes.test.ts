import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { migrateSchema } from '../../src/service/schema.ts';
import { scratchDirectory } from './service-harness.ts';

/**
 * Another instance writing in a tight loop: each transaction takes the write lock again the moment
 * the last one let it go, as the surviving instance of the lab's `partial` run does under load.
 * With `pauseMs`, it rests that long between transactions, as a busy service does between requests.
 * Prints `ready` once it holds the file; stops by itself after `seconds`.
 */
const TIGHT_WRITER = `
const { DatabaseSync } = require('node:sqlite');
const [path, seconds, pauseMs] = process.argv.slice(1);
const pause = new Int32Array(new SharedArrayBuffer(4));
const db = new DatabaseSync(path, { timeout: 5000 });
db.exec('PRAGMA journal_mode = WAL; CREATE TABLE IF NOT EXISTS load_writes (id INTEGER PRIMARY KEY, at INTEGER)');
const insert = db.prepare('INSERT INTO load_writes (at) VALUES (?)');
const until = Date.now() + Number(seconds) * 1000;
let announced = false;
while (Date.now() < until) {
  db.exec('BEGIN IMMEDIATE');
  for (let i = 0; i < 20; i++) insert.run(Date.now());
  db.exec('COMMIT');
  if (Number(pauseMs) > 0) Atomics.wait(pause, 0, 0, Number(pauseMs));
  if (!announced) { announced = true; process.stdout.write('ready\\n'); }
}
`;

async function startTightWriter(path: string, seconds: number, pauseMs = 0): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['-e', TIGHT_WRITER, path, String(seconds), String(pauseMs)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [chunk] = (await once(child.stdout as NodeJS.ReadableStream, 'data')) as [Buffer];
  expect(chunk.toString()).toContain('ready');
  return child;
}

/** A start-up's own connection: no busy timeout, so any wait for the write lock shows at once. */
function impatientConnection(path: string): DatabaseSync {
  const db = new DatabaseSync(path, { timeout: 0 });
  db.exec('PRAGMA journal_mode = WAL');
  return db;
}

describe('the start-up migration check on SQLite while another process writes', () => {
  const scratch = scratchDirectory('migration-under-writes');
  let writer: ChildProcess | undefined;

  afterEach(async () => {
    if (writer !== undefined && writer.exitCode === null) {
      const exited = once(writer, 'exit');
      writer.kill('SIGKILL');
      await exited;
    }
    writer = undefined;
  });

  it('passes every time on a migrated file, never waiting for the write lock', async () => {
    const path = scratch.file('migrated.db');
    const first = impatientConnection(path);
    await migrateSchema({ dialect: 'sqlite', db: first });
    first.close();

    writer = await startTightWriter(path, 30);
    const failures: string[] = [];
    for (let check = 0; check < 40; check++) {
      const db = impatientConnection(path);
      try {
        await migrateSchema({ dialect: 'sqlite', db });
      } catch (error) {
        failures.push(String(error));
      } finally {
        db.close();
      }
    }
    expect(failures).toEqual([]);
    expect(writer.exitCode).toBeNull();
  });

  it('migrates a new file while the other process writes without pause between requests', async () => {
    const path = scratch.file('fresh.db');
    writer = await startTightWriter(path, 30, 1);
    const db = impatientConnection(path);
    try {
      await migrateSchema({ dialect: 'sqlite', db });
      const versions = db.prepare('SELECT version FROM service_migrations ORDER BY version').all() as {
        version: number;
      }[];
      expect(versions.map((row) => row.version)).toEqual([1, 2, 3, 4]);
      expect(db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'charge_targets'").get()).toBeDefined();
      expect(
        db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'payments_created_idx'").get(),
      ).toBeDefined();
    } finally {
      db.close();
    }
  });

  it('still fails on an error that is not a busy database, and leaves no transaction open', async () => {
    const path = scratch.file('broken.db');
    const db = impatientConnection(path);
    // A table in the way of the first migration: the migration cannot run, and says why.
    db.exec('CREATE TABLE users (id TEXT)');
    try {
      await expect(migrateSchema({ dialect: 'sqlite', db })).rejects.toThrow(/users/);
      expect(db.isTransaction).toBe(false);
    } finally {
      db.close();
    }
  });
});
