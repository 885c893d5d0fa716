import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkGroundTruth } from '../../src/lab/ground-truth.ts';
import { GroundTruthError } from '../../src/lab/lab-errors.ts';
import { type RunningProvider, startProvider } from '../../src/providers/provider-launcher.ts';
import { migrateSchema } from '../../src/service/schema.ts';

describe('the ground-truth checker (a crafted sqlite database and a real provider)', () => {
  const directory = mkdtempSync(join(tmpdir(), 'ground-truth-'));
  const dbPath = join(directory, 'service.db');
  let provider: RunningProvider;
  const chargeIds = new Map<string, string[]>();

  const chargeAtProvider = async (reference: string) => {
    const response = await fetch(`${provider.url}/charges`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ amount: 1_000, currency: 'eur', reference }),
    });
    const { id } = (await response.json()) as { id: string };
    chargeIds.set(reference, [...(chargeIds.get(reference) ?? []), id]);
    return id;
  };

  beforeAll(async () => {
    provider = await startProvider({ name: 'a', ledgerPath: join(directory, 'a.db') });
    const db = new DatabaseSync(dbPath);
    db.exec('PRAGMA journal_mode = WAL');
    await migrateSchema({ dialect: 'sqlite', db });
    db.prepare("INSERT INTO users VALUES ('u1', 'u1@example.com', 'x', 0)").run();
    const order = db.prepare("INSERT INTO orders VALUES (?, 'u1', 1000, 'eur', NULL, ?, 0, 0)");
    const payment = db.prepare("INSERT INTO payments VALUES (?, ?, 'a', ?, 1000, 'eur', 0)");
    const invoice = db.prepare("INSERT INTO invoices VALUES (?, ?, ?, 'u1@example.com', 1000, 'eur', 0)");
    // paid once, invoiced twice
    order.run('ord_paid', 'paid');
    payment.run('pay_paid', 'ord_paid', await chargeAtProvider('ord_paid'));
    invoice.run('inv_1', 'pay_paid', 'ord_paid');
    invoice.run('inv_2', 'pay_paid', 'ord_paid');
    // charged twice at the provider (a blind retry), one payment, no invoice
    order.run('ord_double', 'paid');
    payment.run('pay_double', 'ord_double', await chargeAtProvider('ord_double'));
    await chargeAtProvider('ord_double');
    // left half-way: charged at the provider, no payment, still `charging`
    order.run('ord_between', 'charging');
    await chargeAtProvider('ord_between');
    // never charged
    order.run('ord_pending', 'pending');
    // another run's order, charged twice, which the checker must ignore
    order.run('ord_other_run', 'paid');
    await chargeAtProvider('ord_other_run');
    await chargeAtProvider('ord_other_run');
    db.close();
  });

  afterAll(async () => {
    await provider?.stop();
    rmSync(directory, { recursive: true, force: true });
  });

  it('counts double charges, missing acknowledged charges, orders in between and invoices', async () => {
    const truth = await checkGroundTruth({
      providers: [{ name: 'a', url: provider.url }],
      db: dbPath,
      orderIds: ['ord_paid', 'ord_double', 'ord_between', 'ord_pending'],
      acknowledged: ['ord_paid', 'ord_double', 'ord_between', 'ord_pending'],
    });
    expect(truth).toEqual({
      orders: 4,
      providerCharges: 4,
      chargedOrders: 3,
      doubleCharges: 1,
      extraCharges: 1,
      acknowledged: 4,
      acknowledgedButMissing: 2,
      chargedButUnrecorded: 1,
      paymentsWithoutCharge: 0,
      ordersInBetween: 1,
      payments: 2,
      paymentsWithoutInvoice: 1,
      duplicateInvoices: 1,
      maxInvoicesPerOrder: 2,
      examples: {
        doubleCharged: ['ord_double'],
        doubleChargeDetails: [
          (chargeIds.get('ord_double') ?? []).map((id) => ({
            provider: 'a',
            id,
            reference: 'ord_double',
            idempotencyKey: null,
          })),
        ],
        acknowledgedButMissing: ['ord_between', 'ord_pending'],
        inBetween: ['ord_between'],
      },
    });
  });

  it('reads every page of a ledger longer than one page', async () => {
    for (let i = 0; i < 105; i++) await chargeAtProvider('ord_many');
    const truth = await checkGroundTruth({
      providers: [{ name: 'a', url: provider.url }],
      db: dbPath,
      orderIds: ['ord_many'],
      acknowledged: [],
    });
    expect(truth.providerCharges).toBe(105);
    expect(truth.doubleCharges).toBe(1);
    expect(truth.extraCharges).toBe(104);
  });

  it('counts a run of 200,000 orders (the full partial run on Postgres charges 100,000 a mode)', async () => {
    const count = 200_000;
    const db = new DatabaseSync(dbPath);
    const order = db.prepare("INSERT INTO orders VALUES (?, 'u1', 1000, 'eur', NULL, 'paid', 0, 0)");
    const payment = db.prepare("INSERT INTO payments VALUES (?, ?, 'a', ?, 1000, 'eur', 0)");
    const invoice = db.prepare("INSERT INTO invoices VALUES (?, ?, ?, 'u1@example.com', 1000, 'eur', 0)");
    const orderIds: string[] = [];
    db.exec('BEGIN');
    for (let i = 0; i < count; i++) {
      const id = `ord_bulk_${i}`;
      orderIds.push(id);
      order.run(id);
      payment.run(`pay_bulk_${i}`, id, `ch_bulk_${i}`);
      invoice.run(`inv_bulk_${i}`, `pay_bulk_${i}`, id);
    }
    db.exec('COMMIT');
    db.close();
    const truth = await checkGroundTruth({ providers: [], db: dbPath, orderIds, acknowledged: orderIds });
    expect(truth).toMatchObject({
      orders: count,
      payments: count,
      paymentsWithoutInvoice: 0,
      duplicateInvoices: 0,
      maxInvoicesPerOrder: 1,
      acknowledged: count,
    });
  });

  it('fails with GroundTruthError when a ledger or the database cannot be read', async () => {
    await expect(
      checkGroundTruth({
        providers: [{ name: 'gone', url: 'http://127.0.0.1:1' }],
        db: dbPath,
        orderIds: [],
        acknowledged: [],
      }),
    ).rejects.toBeInstanceOf(GroundTruthError);
    await expect(
      checkGroundTruth({
        providers: [],
        db: join(directory, 'missing.db'),
        orderIds: [],
        acknowledged: [],
      }),
    ).rejects.toMatchObject({ code: 'KEEL_LAB_GROUND_TRUTH' });
  });
});
