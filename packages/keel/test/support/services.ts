/**
 * Which real services the tests may use. A suite that needs one runs only when its URL is set; on a
 * machine without it the suite is reported as skipped, with the variable named in its title. CI sets
 * KEEL_REQUIRE_SERVICES=1, which turns a missing URL into a failure instead of a skip.
 */
import { describe, it } from 'vitest';

export type ServiceVariable = 'DATABASE_URL' | 'REDIS_URL' | 'NATS_URL' | 'AMQP_URL';

export function serviceUrl(variable: ServiceVariable): string | undefined {
  const url = process.env[variable];
  if (url) return url;
  if (process.env.KEEL_REQUIRE_SERVICES === '1') {
    throw new Error(`${variable} is not set, and KEEL_REQUIRE_SERVICES=1 requires it`);
  }
  return undefined;
}

/** `describe` that runs only with the service, named so a skip says why. */
export function describeWithService(
  variable: ServiceVariable,
  name: string,
  body: (url: string) => void,
): void {
  const url = serviceUrl(variable);
  if (url !== undefined) {
    describe(name, () => body(url));
    return;
  }
  describe(name, () => {
    it(`needs ${variable}`, (context) => context.skip(`${variable} is not set`));
  });
}
