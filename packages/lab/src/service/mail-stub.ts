/**
 * @module
 * The mail provider the invoices go out through, as a stub that only records what it was asked to
 * send: the lab and the tests read the list to count invoices that really reached a customer,
 * including the duplicates an at-least-once pipeline without an inbox sends.
 */

export interface MailMessage {
  readonly to: string;
  readonly subject: string;
  readonly invoiceId: string;
  readonly sentAt: number;
}

export interface MailStub {
  send(message: Omit<MailMessage, 'sentAt'>): void;
  /** Everything sent so far, oldest first. */
  sent(): readonly MailMessage[];
}

/** @example const mail = mailStub(); mail.send({ to, subject, invoiceId }); mail.sent().length; */
export function mailStub(now: () => number = Date.now): MailStub {
  const messages: MailMessage[] = [];
  return {
    send(message) {
      messages.push({ ...message, sentAt: now() });
    },
    sent: () => messages,
  };
}
