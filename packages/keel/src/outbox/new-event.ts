/**
 * Turning what a producer hands to `append` into the rows a store writes. Every check runs before any
 * write, so an invalid event in a batch writes nothing; the payload must survive JSON unchanged,
 * because the relay and every consumer see it only as JSON — a `Date` that silently became a string,
 * a `Map` that became `{}` or a `bigint` that threw in the relay would be found far from its cause.
 * Stores share this file so every adapter accepts and rejects exactly the same events.
 *
 * @module
 */

import { contextHeaders } from '../observe/context.ts';
import { InvalidOutboxEventError, OutboxPayloadError } from './errors.ts';
import type { NewOutboxEvent, OutboxEvent } from './event.ts';
import { uuidv7 } from './uuidv7.ts';

/** Longest `type`, `aggregateType`, `aggregateId`, `id` and header name, in UTF-16 units. */
export const MAX_EVENT_NAME_LENGTH = 255;
/** Longest header value, in UTF-16 units. */
export const MAX_HEADER_VALUE_LENGTH = 4_096;
/** Most headers on one event. */
export const MAX_HEADERS = 64;
/** Longest payload as JSON text, in UTF-16 units (a broker's 1 MB message limit, with room to spare). */
export const MAX_PAYLOAD_JSON_LENGTH = 900_000;
/** Deepest nesting of arrays and objects in a payload. */
export const MAX_PAYLOAD_DEPTH = 64;
/** Most events one `append` takes. */
export const MAX_EVENTS_PER_APPEND = 10_000;

/** An event ready to write: the event as the outbox returns it, and its JSON columns. */
export interface PreparedOutboxEvent {
  readonly event: OutboxEvent;
  /** `JSON.stringify(event.payload)`, checked to parse back to an equal value. */
  readonly payloadJson: string;
  /** `JSON.stringify(event.headers)`. */
  readonly headersJson: string;
}

/**
 * Validates and serialises events for a store, all or nothing: the first invalid event throws
 * {@link InvalidOutboxEventError} or {@link OutboxPayloadError}. Ids not given are UUIDv7 from
 * `nextId`; every event gets `createdAt = now`.
 *
 * @example
 * const rows = prepareOutboxEvents(events, clock.now());
 * for (const { event, payloadJson, headersJson } of rows) insert.run(event.id, …, payloadJson, headersJson);
 */
export function prepareOutboxEvents(
  input: NewOutboxEvent | readonly NewOutboxEvent[],
  now: number,
  nextId: () => string = uuidv7,
): PreparedOutboxEvent[] {
  const list = Array.isArray(input) ? (input as readonly NewOutboxEvent[]) : [input as NewOutboxEvent];
  if (list.length > MAX_EVENTS_PER_APPEND) {
    throw new InvalidOutboxEventError(
      'events',
      `at most ${MAX_EVENTS_PER_APPEND} per append, got ${list.length}`,
    );
  }
  const prepared: PreparedOutboxEvent[] = [];
  const seen = new Set<string>();
  list.forEach((candidate, index) => {
    const where = list.length === 1 && !Array.isArray(input) ? '' : `events[${index}].`;
    const event = prepareOne(candidate, now, nextId, where);
    if (seen.has(event.event.id)) {
      throw new InvalidOutboxEventError(`${where}id`, `appears twice in one append: ${event.event.id}`);
    }
    seen.add(event.event.id);
    prepared.push(event);
  });
  return prepared;
}

function prepareOne(
  candidate: NewOutboxEvent,
  now: number,
  nextId: () => string,
  where: string,
): PreparedOutboxEvent {
  if (typeof candidate !== 'object' || candidate === null || Array.isArray(candidate)) {
    throw new InvalidOutboxEventError(where.slice(0, -1) || 'event', 'must be an object');
  }
  const type = checkName(`${where}type`, candidate.type);
  const aggregateType = checkName(`${where}aggregateType`, candidate.aggregateType);
  const aggregateId = checkName(`${where}aggregateId`, candidate.aggregateId);
  const id = candidate.id === undefined ? nextId() : checkName(`${where}id`, candidate.id);
  // The caller's request and entity ids travel with the event, so the consumer's logs name them
  // too; headers the caller set win.
  const headers = checkHeaders(`${where}headers`, { ...contextHeaders(), ...candidate.headers });
  if (!('payload' in candidate)) {
    throw new OutboxPayloadError(`${where}payload`, 'is missing (use null for an event without data)');
  }
  const payloadJson = serialisePayload(candidate.payload, `${where}payload`);
  const event: OutboxEvent = Object.freeze({
    id,
    type,
    aggregateType,
    aggregateId,
    payload: candidate.payload,
    headers,
    createdAt: now,
  });
  return { event, payloadJson, headersJson: JSON.stringify(headers) };
}

function checkName(field: string, value: unknown): string {
  if (typeof value !== 'string' || value === '' || value.length > MAX_EVENT_NAME_LENGTH) {
    throw new InvalidOutboxEventError(
      field,
      `must be a non-empty string of at most ${MAX_EVENT_NAME_LENGTH} characters, got ${describe(value)}`,
    );
  }
  checkText(field, value, (reason) => new InvalidOutboxEventError(field, reason));
  return value;
}

function checkHeaders(field: string, value: unknown): Readonly<Record<string, string>> {
  if (value === undefined) return Object.freeze({});
  if (typeof value !== 'object' || value === null || Array.isArray(value) || !isPlainObject(value)) {
    throw new InvalidOutboxEventError(field, `must be a plain object of strings, got ${describe(value)}`);
  }
  if (Object.getOwnPropertySymbols(value).length > 0) {
    throw new InvalidOutboxEventError(field, 'must not have symbol keys');
  }
  const entries = Object.entries(value);
  if (entries.length > MAX_HEADERS) {
    throw new InvalidOutboxEventError(field, `at most ${MAX_HEADERS} headers, got ${entries.length}`);
  }
  const headers: Record<string, string> = {};
  for (const [name, header] of entries) {
    const at = `${field}[${JSON.stringify(name)}]`;
    if (name === '' || name.length > MAX_EVENT_NAME_LENGTH) {
      throw new InvalidOutboxEventError(at, `header names are 1 to ${MAX_EVENT_NAME_LENGTH} characters`);
    }
    if (typeof header !== 'string' || header.length > MAX_HEADER_VALUE_LENGTH) {
      throw new InvalidOutboxEventError(
        at,
        `must be a string of at most ${MAX_HEADER_VALUE_LENGTH} characters, got ${describe(header)}`,
      );
    }
    const fail = (reason: string) => new InvalidOutboxEventError(at, reason);
    checkText(at, name, fail);
    checkText(at, header, fail);
    headers[name] = header;
  }
  return Object.freeze(headers);
}

/** Either character {@link checkText} looks at closer: most strings (ids, names) have neither. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: U+0000 is one of the characters looked for.
const SURROGATE_OR_NUL = /[\u0000\uD800-\uDFFF]/;

/**
 * Strings must be well-formed Unicode (a lone surrogate becomes U+FFFD in a database or on the wire)
 * and free of U+0000 (Postgres text and many brokers' headers refuse it). One scan for either
 * character clears the usual string; `isWellFormed` then tells a lone surrogate from a pair.
 */
function checkText(_field: string, value: string, fail: (reason: string) => Error): void {
  if (!SURROGATE_OR_NUL.test(value)) return;
  if (!value.isWellFormed()) throw fail('is not well-formed Unicode (a lone surrogate)');
  if (value.includes('\u0000')) throw fail('contains the character U+0000');
}

/**
 * `JSON.stringify(payload)` after checking that the text parses back to the same value.
 *
 * @example
 * serialisePayload({ amount: 1500 }); // '{"amount":1500}'
 * serialisePayload({ at: new Date() }); // throws OutboxPayloadError at 'payload.at'
 */
export function serialisePayload(payload: unknown, path = 'payload'): string {
  checkJsonValue(payload, path, new Set(), 0);
  const json = JSON.stringify(payload);
  if (json.length > MAX_PAYLOAD_JSON_LENGTH) {
    throw new OutboxPayloadError(
      path,
      `is ${json.length} characters as JSON, over the limit of ${MAX_PAYLOAD_JSON_LENGTH}: store large data elsewhere and send a reference`,
    );
  }
  return json;
}

function checkJsonValue(value: unknown, path: string, ancestors: Set<object>, depth: number): void {
  switch (typeof value) {
    case 'string':
      checkText(path, value, (reason) => new OutboxPayloadError(path, reason));
      return;
    case 'boolean':
      return;
    case 'number':
      if (!Number.isFinite(value)) {
        throw new OutboxPayloadError(path, `${String(value)} is not a JSON number (JSON writes it as null)`);
      }
      return;
    case 'undefined':
      throw new OutboxPayloadError(path, 'is undefined (JSON drops it); use null or leave the key out');
    case 'bigint':
      throw new OutboxPayloadError(path, 'is a bigint (JSON cannot hold it); send it as a string');
    case 'function':
      throw new OutboxPayloadError(path, 'is a function (JSON drops it)');
    case 'symbol':
      throw new OutboxPayloadError(path, 'is a symbol (JSON drops it)');
  }
  if (value === null) return;
  const object = value as object;
  if (depth >= MAX_PAYLOAD_DEPTH) {
    throw new OutboxPayloadError(path, `nests deeper than ${MAX_PAYLOAD_DEPTH} levels`);
  }
  if (ancestors.has(object)) throw new OutboxPayloadError(path, 'is a circular reference');
  ancestors.add(object);
  if (Array.isArray(object)) {
    if (Object.getPrototypeOf(object) !== Array.prototype) {
      throw new OutboxPayloadError(path, 'is an array subclass (JSON writes a plain array)');
    }
    for (let i = 0; i < object.length; i++) {
      if (!(i in object))
        throw new OutboxPayloadError(`${path}[${i}]`, 'is a hole in a sparse array (JSON writes null)');
      checkJsonValue(object[i], `${path}[${i}]`, ancestors, depth + 1);
    }
  } else {
    if (!isPlainObject(object)) {
      const kind = object.constructor?.name ?? 'object';
      throw new OutboxPayloadError(
        path,
        `is a ${kind}, not a plain object (JSON would turn it into something else${kind === 'Date' ? ': send toISOString()' : ''})`,
      );
    }
    if (Object.getOwnPropertySymbols(object).length > 0) {
      throw new OutboxPayloadError(path, 'has symbol keys (JSON drops them)');
    }
    for (const key of Object.keys(object)) {
      const at = IDENTIFIER_KEY.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
      checkText(at, key, (reason) => new OutboxPayloadError(at, `key ${reason}`));
      checkJsonValue((object as Record<string, unknown>)[key], at, ancestors, depth + 1);
    }
  }
  ancestors.delete(object);
}

const IDENTIFIER_KEY = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** An object whose prototype is `Object.prototype` or `null`, with no `toJSON` of its own. */
function isPlainObject(value: object): boolean {
  const prototype = Object.getPrototypeOf(value);
  if (prototype !== Object.prototype && prototype !== null) return false;
  // A toJSON method makes JSON.stringify write something else than the object's own fields.
  return typeof (value as { toJSON?: unknown }).toJSON !== 'function';
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'symbol' || typeof value === 'function') return typeof value;
  if (value === null || typeof value !== 'object') return String(value);
  return Array.isArray(value) ? 'an array' : 'an object';
}
