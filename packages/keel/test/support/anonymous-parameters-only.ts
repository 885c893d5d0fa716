/**
 * A `node:sqlite` handle that binds parameters as better-sqlite3 does: by position only for
 * anonymous `?` parameters. better-sqlite3 takes a numbered one (`?1`) for a named parameter and
 * refuses an array of values for it ("Too many parameter values were provided"), and it is a native
 * addon this project does not build, so the stores' conformance suites run through this rule
 * instead, on the same database.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite';

/** A numbered parameter: `?` and digits. The stores' SQL holds no `?` inside string literals. */
const NUMBERED = /\?\d/;

/**
 * @example
 * const store = sqliteOutbox({ db: anonymousParametersOnly(new DatabaseSync(':memory:')) });
 */
export function anonymousParametersOnly(db: DatabaseSync): DatabaseSync {
  return new Proxy(db, {
    get(target, property) {
      if (property !== 'prepare') {
        const value = Reflect.get(target, property, target);
        return typeof value === 'function' ? value.bind(target) : value;
      }
      return (sql: string) => {
        const statement = target.prepare(sql);
        if (!NUMBERED.test(sql)) return statement;
        const refuse = () => {
          throw new RangeError(`Too many parameter values were provided (numbered parameters in: ${sql})`);
        };
        return new Proxy(statement, {
          get(inner, name) {
            if (name === 'run' || name === 'get' || name === 'all' || name === 'iterate') return refuse;
            const value = Reflect.get(inner, name, inner);
            return typeof value === 'function' ? value.bind(inner) : value;
          },
        }) as StatementSync;
      };
    },
  });
}
