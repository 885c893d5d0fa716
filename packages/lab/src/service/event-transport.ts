/**
 * @module
 * Opens the transport the configuration names: in-process by default, NATS JetStream or RabbitMQ
 * by URL, each through Keel's adapter over the driver the service depends on. `close` stops the
 * transport and then the connection it runs on.
 */
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect as connectNats } from '@nats-io/transport-node';
import amqplib from 'amqplib';
import { amqpTransport } from 'keel/amqp';
import { natsTransport } from 'keel/nats';
import { inProcessTransport, type Transport } from 'keel/outbox';
import type { BrokerConfig } from './config.ts';

export interface OpenTransport {
  readonly transport: Transport;
  close(): Promise<void>;
}

/**
 * @example
 * const { transport, close } = await openTransport({ kind: 'nats', url: 'nats://127.0.0.1:4222' }, 'payments');
 */
export async function openTransport(broker: BrokerConfig, channel: string): Promise<OpenTransport> {
  if (broker.kind === 'in-process') {
    // A publish waits for the invoice consumer to settle the event, which takes milliseconds; 5 s is
    // generous, and stays below the relay's lease (see event-outbox.ts).
    const transport = inProcessTransport({ confirm: 'settled', confirmTimeoutMs: 5_000 });
    return { transport, close: () => transport.close() };
  }
  if (broker.kind === 'nats') {
    const connection = await connectNats({ servers: broker.url });
    const transport = natsTransport({
      jetstream: jetstream(connection),
      manager: await jetstreamManager(connection),
      stream: `${channel.toUpperCase()}_EVENTS`,
      subjectPrefix: `${channel}.events`,
      // The invoice handler commits in milliseconds. Messages the server had already sent to a
      // consumer that stops (a restart, a deploy) come back only after this wait; 10 s instead of
      // 30 s keeps that gap short, and a redelivery that races a slow handler is the inbox's to skip.
      ackWaitMs: 10_000,
    });
    return {
      transport,
      close: async () => {
        await transport.close();
        await connection.drain();
      },
    };
  }
  const connection = await amqplib.connect(broker.url);
  const transport = amqpTransport({ connection, exchange: `${channel}.events` });
  return {
    transport,
    close: async () => {
      await transport.close();
      await connection.close();
    },
  };
}
