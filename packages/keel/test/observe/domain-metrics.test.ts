import {
  counter,
  createMetrics,
  defineDomainMetrics,
  gauge,
  histogram,
  prometheusBackend,
} from 'keel/observe';
import * as promClient from 'prom-client';
import { describe, expect, it } from 'vitest';

describe('defineDomainMetrics', () => {
  it('types each metric by its declaration, labelled or not, and zero-initialises the counters', async () => {
    const registry = new promClient.Registry();
    const metrics = defineDomainMetrics(createMetrics(prometheusBackend(registry, promClient)), {
      invoicesSent: counter('invoices_sent_total', 'Invoices handed to the mail provider.'),
      ordersCreated: counter('orders_created_total', 'Orders accepted.', { channel: ['web', 'api'] }),
      pending: gauge('orders_pending', 'Orders waiting for payment.'),
      amount: histogram('charge_amount_euros', 'Amounts charged.', [10, 100]),
    });
    const text = await registry.metrics();
    expect(text).toContain('invoices_sent_total 0');
    expect(text).toContain('orders_created_total{channel="api"} 0');

    metrics.invoicesSent.inc(); // no labels declared: no argument needed
    metrics.ordersCreated.inc({ channel: 'web' }, 2);
    metrics.pending.set({}, 3);
    metrics.amount.observe({}, 15);
    // @ts-expect-error a label value the declaration does not list
    expect(() => metrics.ordersCreated.inc({ channel: 'fax' })).not.toThrow(); // refused and counted, not thrown
    const after = await registry.metrics();
    expect(after).toContain('invoices_sent_total 1');
    expect(after).toContain('orders_created_total{channel="web"} 2');
    expect(after).toContain('orders_pending 3');
    expect(after).not.toContain('fax');
  });
});
