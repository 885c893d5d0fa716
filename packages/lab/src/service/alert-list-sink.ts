/**
 * @module
 * An alert sink that keeps every notification in a list, with the wall-clock time it was sent, so
 * the lab and the tests can read which alerts fired, with which ids and when, without parsing log
 * lines. The time is what an on-call person would see the page arrive; `startsAt` in the
 * notification is when the evaluator first saw the breach.
 */
import type { AlertNotification, AlertSink } from 'keel/observe';

/** A notification and when the sink received it. */
export interface SentAlert {
  /** Wall-clock time (ms since the epoch) the notification reached the sink. */
  readonly sentAt: number;
  readonly notification: AlertNotification;
}

export interface AlertListSink extends AlertSink {
  /** Every notification so far, oldest first. */
  readonly notifications: readonly AlertNotification[];
  /** The same notifications, each with the time it was sent. */
  readonly sent: readonly SentAlert[];
}

/**
 * @example
 * const list = alertListSink();
 * invariants({ checks, sinks: [logSink(log), list] });
 * list.notifications.filter((n) => n.status === 'firing');
 * list.sent[0]?.sentAt; // when the first one was sent
 */
export function alertListSink(clock: () => number = Date.now): AlertListSink {
  const notifications: AlertNotification[] = [];
  const sent: SentAlert[] = [];
  return {
    name: 'list',
    notifications,
    sent,
    async send(notification) {
      notifications.push(notification);
      sent.push({ sentAt: clock(), notification });
    },
  };
}
