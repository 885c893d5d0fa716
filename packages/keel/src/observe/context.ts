/**
 * The ids a failure must be traced by — request id, correlation id, idempotency key and the ids of
 * the entities being worked on — carried in async context so every log line and exemplar made while
 * handling a request (or an event) can name them without threading them through every call. The
 * context survives the hop through a broker: {@link contextHeaders} writes it into an outbox event's
 * headers and {@link contextFromHeaders} reads it back on the consumer side.
 *
 * The deadline is not stored here a second time: {@link KeelContext.deadline} reads the store of
 * `policy/deadline.ts`, so `withTimeBudget()`, the timeout policy and this context always agree.
 *
 * @module
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { currentDeadline, runWithDeadline } from '../policy/deadline.ts';

/** Ids of the entities a unit of work is about, keyed by a camelCase name: `{ orderId: 'o-42' }`. */
export type EntityIds = Readonly<Record<string, string>>;

/** What a context is started with; every field is optional and inherited from the enclosing context. */
export interface ContextValues {
  /** Identifies one request (or one delivery of an event) end to end. */
  readonly requestId?: string;
  /** Ties together every request and event caused by one user action. */
  readonly correlationId?: string;
  /** The client's `Idempotency-Key`, so a replay can be found in the logs. */
  readonly idempotencyKey?: string;
  /** Entity ids, merged over the enclosing context's. */
  readonly entities?: EntityIds;
  /**
   * An absolute deadline on the system clock's monotonic scale; narrows (never widens) the
   * surrounding deadline through `runWithDeadline()`.
   */
  readonly deadline?: number;
}

/** The context of the calling async scope. */
export interface KeelContext {
  readonly requestId: string | undefined;
  readonly correlationId: string | undefined;
  readonly idempotencyKey: string | undefined;
  /** A snapshot of the entity ids bound so far. */
  readonly entities: EntityIds;
  /** The absolute deadline of the calling scope (from `policy/deadline.ts`), `Infinity` when none. */
  readonly deadline: number;
}

/** Header that carries the request id over HTTP and through the broker. */
export const REQUEST_ID_HEADER = 'x-request-id';
/** Header that carries the correlation id. */
export const CORRELATION_ID_HEADER = 'x-correlation-id';
/** Header that carries the idempotency key (the standard's own name). */
export const IDEMPOTENCY_KEY_HEADER = 'idempotency-key';
/** Prefix of the headers that carry entity ids: `orderId` travels as `keel-entity-order-id`. */
export const ENTITY_HEADER_PREFIX = 'keel-entity-';

/** Entity names are camelCase identifiers, so they round-trip through lower-case header names. */
const ENTITY_NAME = /^[a-z][a-zA-Z0-9]{0,63}$/;
/** Headers come from outside: they can never make a context grow without bound. */
const MAX_ENTITIES = 32;
const MAX_VALUE_LENGTH = 256;

/** One scope's state. Entities are copied on entry, so a child never writes into its parent. */
class Frame {
  readonly requestId: string | undefined;
  readonly correlationId: string | undefined;
  readonly idempotencyKey: string | undefined;
  readonly entities: Record<string, string>;
  entityCount: number;

  constructor(parent: Frame | undefined, values: ContextValues) {
    this.requestId = values.requestId ?? parent?.requestId;
    this.correlationId = values.correlationId ?? parent?.correlationId;
    this.idempotencyKey = values.idempotencyKey ?? parent?.idempotencyKey;
    this.entities = parent ? { ...parent.entities } : {};
    this.entityCount = parent ? parent.entityCount : 0;
    if (values.entities) this.bind(values.entities);
  }

  /** Adds ids with a valid name and a bounded value; anything else is dropped, never thrown. */
  bind(ids: EntityIds): void {
    for (const name in ids) {
      const value = ids[name];
      if (typeof value !== 'string' || !ENTITY_NAME.test(name)) continue;
      const known = Object.hasOwn(this.entities, name);
      if (!known && this.entityCount >= MAX_ENTITIES) continue;
      this.entities[name] = value.length > MAX_VALUE_LENGTH ? value.slice(0, MAX_VALUE_LENGTH) : value;
      if (!known) this.entityCount++;
    }
  }
}

const storage = new AsyncLocalStorage<Frame>();

/**
 * Runs `fn` in a context holding `values` on top of the enclosing context's. Timers, promises and
 * callbacks started inside keep the context; a nested call narrows or adds, never leaks outward.
 *
 * @example
 * await runInContext({ requestId: req.id, entities: { orderId } }, () => chargeOrder(orderId));
 */
export function runInContext<R>(values: ContextValues, fn: () => R): R {
  const frame = new Frame(storage.getStore(), values);
  if (values.deadline === undefined) return storage.run(frame, fn);
  return storage.run(frame, runWithDeadline, values.deadline, fn);
}

/**
 * The context of the calling scope, or `undefined` outside any {@link runInContext}.
 *
 * @example
 * const ctx = currentContext();
 * if (ctx?.entities.orderId) span.setAttribute('order.id', ctx.entities.orderId);
 */
export function currentContext(): KeelContext | undefined {
  const frame = storage.getStore();
  if (frame === undefined) return undefined;
  return {
    requestId: frame.requestId,
    correlationId: frame.correlationId,
    idempotencyKey: frame.idempotencyKey,
    entities: { ...frame.entities },
    deadline: currentDeadline(),
  };
}

/**
 * Adds entity ids to the current context, once they are known (after a lookup, an insert). Returns
 * false — and does nothing — outside a context. Names must be camelCase identifiers; at most 32 ids
 * are kept and values are cut at 256 characters, so an id taken from a request cannot bloat logs.
 *
 * @example
 * const payment = await payments.create(order);
 * bindEntity({ paymentId: payment.id }); // every later log line in this request names it
 */
export function bindEntity(ids: EntityIds): boolean {
  const frame = storage.getStore();
  if (frame === undefined) return false;
  frame.bind(ids);
  return true;
}

/**
 * The current context as headers, for `OutboxEvent.headers` or an outgoing HTTP request. The
 * deadline is deliberately left out: an event outlives the request that caused it, so a consumer
 * must not inherit the request's few remaining milliseconds (use `deadlineHeaderValue()` for a
 * synchronous downstream call). Returns an empty object outside a context.
 *
 * @example
 * await outbox.append(tx, { type: 'payment.completed', aggregateType: 'payment',
 *   aggregateId: payment.id, payload, headers: contextHeaders() });
 */
export function contextHeaders(): Record<string, string> {
  const headers: Record<string, string> = {};
  const frame = storage.getStore();
  if (frame === undefined) return headers;
  if (frame.requestId !== undefined) headers[REQUEST_ID_HEADER] = frame.requestId;
  if (frame.correlationId !== undefined) headers[CORRELATION_ID_HEADER] = frame.correlationId;
  if (frame.idempotencyKey !== undefined) headers[IDEMPOTENCY_KEY_HEADER] = frame.idempotencyKey;
  for (const name in frame.entities) {
    headers[ENTITY_HEADER_PREFIX + toHeaderName(name)] = frame.entities[name] as string;
  }
  return headers;
}

/** Headers as Node, the Fetch API and brokers give them. */
export type ContextHeaderSource =
  | Readonly<Record<string, string | readonly string[] | undefined>>
  | { forEach(callback: (value: string, name: string) => void): void };

/**
 * Reads the values {@link contextHeaders} wrote (or an HTTP client sent) back into
 * {@link ContextValues}, for {@link runInContext} on the consumer side. Header names are matched
 * case-insensitively; unknown headers are ignored, and the same bounds as {@link bindEntity} apply.
 *
 * @example
 * await transport.subscribe('invoices', (event) =>
 *   runInContext(contextFromHeaders(event.headers), () => sendInvoice(event)));
 */
export function contextFromHeaders(headers: ContextHeaderSource): ContextValues {
  let requestId: string | undefined;
  let correlationId: string | undefined;
  let idempotencyKey: string | undefined;
  let entities: Record<string, string> | undefined;
  let entityCount = 0;
  const read = (raw: string | readonly string[] | undefined, rawName: string): void => {
    const value = bounded(Array.isArray(raw) ? (raw[0] as string | undefined) : (raw as string | undefined));
    if (value === undefined) return;
    const name = rawName.toLowerCase();
    if (name === REQUEST_ID_HEADER) requestId = value;
    else if (name === CORRELATION_ID_HEADER) correlationId = value;
    else if (name === IDEMPOTENCY_KEY_HEADER) idempotencyKey = value;
    else if (name.startsWith(ENTITY_HEADER_PREFIX) && entityCount < MAX_ENTITIES) {
      const entity = fromHeaderName(name.slice(ENTITY_HEADER_PREFIX.length));
      if (entity === undefined) return;
      entities ??= {};
      if (!Object.hasOwn(entities, entity)) entityCount++;
      entities[entity] = value;
    }
  };
  if (typeof headers.forEach === 'function') {
    (headers as { forEach(cb: (value: string, name: string) => void): void }).forEach(read);
  } else {
    const record = headers as Readonly<Record<string, string | readonly string[] | undefined>>;
    for (const name in record) read(record[name], name);
  }
  return {
    ...(requestId !== undefined && { requestId }),
    ...(correlationId !== undefined && { correlationId }),
    ...(idempotencyKey !== undefined && { idempotencyKey }),
    ...(entities !== undefined && { entities }),
  };
}

/**
 * {@link contextFromHeaders} for an incoming HTTP request: a request without `x-request-id` gets a
 * fresh UUID, and one without a correlation id is correlated by its own request id.
 *
 * @example
 * app.addHook('onRequest', (req, _reply, done) => runInContext(requestContext(req.headers), done));
 */
export function requestContext(headers: ContextHeaderSource): ContextValues {
  const values = contextFromHeaders(headers);
  const requestId = values.requestId ?? randomUUID();
  return { ...values, requestId, correlationId: values.correlationId ?? requestId };
}

function bounded(value: string | undefined): string | undefined {
  if (typeof value !== 'string' || value.length === 0) return undefined;
  return value.length > MAX_VALUE_LENGTH ? value.slice(0, MAX_VALUE_LENGTH) : value;
}

/** `orderId` → `order-id`. */
function toHeaderName(entity: string): string {
  return entity.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** `order-id` → `orderId`; `undefined` for anything {@link toHeaderName} cannot have written. */
function fromHeaderName(header: string): string | undefined {
  if (!/^[a-z][a-z0-9]*(-[a-z][a-z0-9]*)*$/.test(header)) return undefined;
  const entity = header.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
  return ENTITY_NAME.test(entity) ? entity : undefined;
}
