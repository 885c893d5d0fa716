/**
 * @module
 * An alert sink that keeps every notification in a list, so the lab and the tests can read which
 * alerts fired, with which ids, without parsing log lines.
 */
import type { AlertNotification, AlertSink } from 'keel/observe';

export interface AlertListSink extends AlertSink {
  /** Every notification so far, oldest first. */
  readonly notifications: readonly AlertNotification[];
}

/**
 * @example
 * const list = alertListSink();
 * invariants({ checks, sinks: [logSink(log), list] });
 * list.notifications.filter((n) => n.status === 'firing');
 */
export function alertListSink(): AlertListSink {
  const notifications: AlertNotification[] = [];
  return {
    name: 'list',
    notifications,
    async send(notification) {
      notifications.push(notification);
    },
  };
}
