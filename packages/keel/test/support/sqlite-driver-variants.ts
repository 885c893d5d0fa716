/**
 * A `node:sqlite` handle that behaves as another driver would, over the same database: the stores
 * take better-sqlite3 handles too, and better-sqlite3 is a native addon this project does not
 * build, so its tests run the stores through the differences that matter to them.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { overriding } from './overriding.ts';

/** A numbered parameter: `?` and digits. The stores' SQL holds no `?` inside string literals. */
const NUMBERED = /\?\d/;

/**
 * `db` binding parameters as better-sqlite3 does: by position only for anonymous `?` parameters.
 * better-sqlite3 takes a numbered one (`?1`) for a named parameter and refuses an array of values
 * for it ("Too many parameter values were provided").
 *
 * @example
 * const store = sqliteOutbox({ db: anonymousParametersOnly(new DatabaseSync(':memory:')) });
 */
export function anonymousParametersOnly(db: DatabaseSync): DatabaseSync {
  return overriding(db, {
    prepare: (sql: string) => {
      const statement = db.prepare(sql);
      if (!NUMBERED.test(sql)) return statement;
      const refuse = () => {
        throw new RangeError(`Too many parameter values were provided (numbered parameters in: ${sql})`);
      };
      return overriding(statement, { run: refuse, get: refuse, all: refuse, iterate: refuse });
    },
  });
}

/** `db` as a driver whose statements return rows only as objects (no `setReturnArrays`, no `raw`). */
export function withoutArrayRows(db: DatabaseSync): DatabaseSync {
  return overriding(db, {
    prepare: (sql: string) => {
      const statement = db.prepare(sql);
      // Only what such a driver's statements have: the stores must not reach for the rest.
      return {
        run: (...values: never[]) => statement.run(...values),
        get: (...values: never[]) => statement.get(...values),
        all: (...values: never[]) => statement.all(...values),
      } as unknown as StatementSync;
    },
  });
}
