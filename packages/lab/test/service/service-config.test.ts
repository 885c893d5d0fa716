import { describe, expect, it } from 'vitest';
import { configFromArgs, InvalidServiceConfigError, serviceConfig } from '../../src/service/config.ts';

const providers = { providerA: 'http://127.0.0.1:4001', providerB: 'http://127.0.0.1:4002/' };

describe('service configuration', () => {
  it('defaults to guarded, a sqlite file and in-process events', () => {
    const config = serviceConfig(providers);
    expect(config).toMatchObject({
      mode: 'guarded',
      db: { kind: 'sqlite', path: 'payments.db' },
      broker: { kind: 'in-process' },
      primary: { name: 'a', url: 'http://127.0.0.1:4001' },
      secondary: { name: 'b', url: 'http://127.0.0.1:4002' },
      salesRows: 300_000,
    });
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('reads Postgres, NATS and AMQP from their URLs', () => {
    expect(serviceConfig({ ...providers, db: 'postgres://u@h/db' }).db).toMatchObject({ kind: 'postgres' });
    expect(serviceConfig({ ...providers, broker: 'nats://h:4222' }).broker).toEqual({
      kind: 'nats',
      url: 'nats://h:4222',
    });
    expect(serviceConfig({ ...providers, broker: 'amqp://h' }).broker).toEqual({
      kind: 'amqp',
      url: 'amqp://h',
    });
  });

  it.each([
    [{ mode: 'careful' }, 'mode'],
    [{ db: 'mysql://h/db' }, 'db'],
    [{ db: ':memory:' }, 'db'],
    [{ broker: 'kafka://h' }, 'broker'],
    [{ providerA: 'ftp://h' }, 'providerA'],
    [{ providerB: '' }, 'providerB'],
    [{ port: 70_000 }, 'port'],
    [{ rows: -1 }, 'rows'],
    [{ scryptCost: 1_000 }, 'scryptCost'],
    [{ tokenSecret: 'short' }, 'tokenSecret'],
  ])('refuses %j, naming %s', (input, setting) => {
    const attempt = () => serviceConfig({ ...providers, ...input });
    expect(attempt).toThrow(InvalidServiceConfigError);
    expect(attempt).toThrow(new RegExp(`^${setting}: `));
  });

  it('reads command-line flags and refuses unknown or incomplete ones', () => {
    const config = configFromArgs([
      '--mode',
      'naive',
      '--provider-a',
      providers.providerA,
      '--provider-b',
      providers.providerB,
      '--rows',
      '1000',
      '--port',
      '0',
    ]);
    expect(config).toMatchObject({ mode: 'naive', salesRows: 1_000, port: 0 });
    expect(() => configFromArgs(['--colour', 'blue'])).toThrow(/--colour: unknown flag/);
    expect(() => configFromArgs(['--rows'])).toThrow(/--rows: needs a value/);
    expect(() => configFromArgs(['--rows', 'many'])).toThrow(/--rows: must be a number/);
  });
});
