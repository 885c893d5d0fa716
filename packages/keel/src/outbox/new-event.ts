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
  if (!Array.isArray(input)) return [prepareOne(input as NewOutboxEvent, now, nextId, ALONE)];
  const list = input as readonly NewOutboxEvent[];
  if (list.length > MAX_EVENTS_PER_APPEND) {
    throw new InvalidOutboxEventError(
      'events',
      `at most ${MAX_EVENTS_PER_APPEND} per append, got ${list.length}`,
    );
  }
  const prepared: PreparedOutboxEvent[] = new Array(list.length);
  const seen = list.length > 1 ? new Set<string>() : undefined;
  for (let index = 0; index < list.length; index++) {
    const event = prepareOne(list[index] as NewOutboxEvent, now, nextId, index);
    if (seen !== undefined) {
      if (seen.has(event.event.id)) {
        throw new InvalidOutboxEventError(
          fieldOf(index, 'id'),
          `appears twice in one append: ${event.event.id}`,
        );
      }
      seen.add(event.event.id);
    }
    prepared[index] = event;
  }
  return prepared;
}

/** The index of an event passed alone rather than in an array: its fields are named bare. */
const ALONE = -1;

/** The name of a field of the event at `index` in an error: `type`, or `events[3].type`. */
function fieldOf(index: number, field: string): string {
  return index === ALONE ? field : `events[${index}].${field}`;
}

/** Headers of an event that has none, shared: most events carry none. */
const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({});

function prepareOne(
  candidate: NewOutboxEvent,
  now: number,
  nextId: () => string,
  index: number,
): PreparedOutboxEvent {
  if (typeof candidate !== 'object' || candidate === null || Array.isArray(candidate)) {
    throw new InvalidOutboxEventError(index === ALONE ? 'event' : `events[${index}]`, 'must be an object');
  }
  const type = checkName(index, 'type', candidate.type);
  const aggregateType = checkName(index, 'aggregateType', candidate.aggregateType);
  const aggregateId = checkName(index, 'aggregateId', candidate.aggregateId);
  const id = candidate.id === undefined ? nextId() : checkName(index, 'id', candidate.id);
  // The caller's request and entity ids travel with the event, so the consumer's logs name them
  // too; headers the caller set win.
  const own = candidate.headers as unknown;
  if (own !== undefined && !isHeaderObject(own)) {
    throw new InvalidOutboxEventError(
      fieldOf(index, 'headers'),
      `must be a plain object of strings, got ${describe(own)}`,
    );
  }
  const context = contextHeaders();
  const merged = own === undefined ? context : { ...context, ...(own as Record<string, unknown>) };
  const headers = isEmpty(merged) ? NO_HEADERS : checkHeaders(fieldOf(index, 'headers'), merged);
  if (!('payload' in candidate)) {
    throw new OutboxPayloadError(
      fieldOf(index, 'payload'),
      'is missing (use null for an event without data)',
    );
  }
  const payloadJsonText = payloadJson(candidate.payload, index);
  const event: OutboxEvent = Object.freeze({
    id,
    type,
    aggregateType,
    aggregateId,
    payload: candidate.payload,
    headers,
    createdAt: now,
  });
  return {
    event,
    payloadJson: payloadJsonText,
    headersJson: headers === NO_HEADERS ? '{}' : JSON.stringify(headers),
  };
}

function checkName(index: number, field: string, value: unknown): string {
  if (typeof value !== 'string' || value === '' || value.length > MAX_EVENT_NAME_LENGTH) {
    throw new InvalidOutboxEventError(
      fieldOf(index, field),
      `must be a non-empty string of at most ${MAX_EVENT_NAME_LENGTH} characters, got ${describe(value)}`,
    );
  }
  const problem = textProblem(value);
  if (problem !== undefined) throw new InvalidOutboxEventError(fieldOf(index, field), problem);
  return value;
}

/** A plain object without symbol keys: the only shape headers may come in. */
function isHeaderObject(value: unknown): value is object {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    isPlainObject(value) &&
    Object.getOwnPropertySymbols(value).length === 0
  );
}

function isEmpty(value: object): boolean {
  for (const _ in value) return false;
  return true;
}

/** The name of one header in an error: `headers["x-id"]`. */
function headerField(field: string, name: string): string {
  return `${field}[${JSON.stringify(name)}]`;
}

/** Checks merged headers (a plain object, see {@link isHeaderObject}): names and values. */
function checkHeaders(field: string, value: Record<string, unknown>): Readonly<Record<string, string>> {
  const entries = Object.entries(value);
  if (entries.length > MAX_HEADERS) {
    throw new InvalidOutboxEventError(field, `at most ${MAX_HEADERS} headers, got ${entries.length}`);
  }
  const headers: Record<string, string> = {};
  for (const [name, header] of entries) {
    if (name === '' || name.length > MAX_EVENT_NAME_LENGTH) {
      throw new InvalidOutboxEventError(
        headerField(field, name),
        `header names are 1 to ${MAX_EVENT_NAME_LENGTH} characters`,
      );
    }
    if (typeof header !== 'string' || header.length > MAX_HEADER_VALUE_LENGTH) {
      throw new InvalidOutboxEventError(
        headerField(field, name),
        `must be a string of at most ${MAX_HEADER_VALUE_LENGTH} characters, got ${describe(header)}`,
      );
    }
    const problem = textProblem(name) ?? textProblem(header);
    if (problem !== undefined) throw new InvalidOutboxEventError(headerField(field, name), problem);
    headers[name] = header;
  }
  return Object.freeze(headers);
}

/** Either character {@link textProblem} looks at closer: most strings (ids, names) have neither. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: U+0000 is one of the characters looked for.
const SURROGATE_OR_NUL = /[\u0000\uD800-\uDFFF]/;

/**
 * What is wrong with a string, if anything. Strings must be well-formed Unicode (a lone surrogate
 * becomes U+FFFD in a database or on the wire) and free of U+0000 (Postgres text and many brokers'
 * headers refuse it). One scan for either character clears the usual string; `isWellFormed` then
 * tells a lone surrogate from a pair.
 */
function textProblem(value: string): string | undefined {
  if (!SURROGATE_OR_NUL.test(value)) return undefined;
  if (!value.isWellFormed()) return 'is not well-formed Unicode (a lone surrogate)';
  if (value.includes('\u0000')) return 'contains the character U+0000';
  return undefined;
}

/**
 * `JSON.stringify(payload)` after checking that the text parses back to the same value.
 *
 * @example
 * serialisePayload({ amount: 1500 }); // '{"amount":1500}'
 * serialisePayload({ at: new Date() }); // throws OutboxPayloadError at 'payload.at'
 */
export function serialisePayload(payload: unknown, path = 'payload'): string {
  return payloadJson(payload, path);
}

/**
 * {@link serialisePayload} where `at` is the path, or the index of the event whose payload it is:
 * the path is spelt out only when something is wrong.
 */
function payloadJson(payload: unknown, at: string | number): string {
  // The usual payload passes the quick check, which builds no path; one that does not is walked
  // again by the check that names where the problem is.
  if (!isJsonSafe(payload, 0)) checkJsonValue(payload, payloadPath(at), new Set(), 0);
  const json = JSON.stringify(payload);
  if (json.length > MAX_PAYLOAD_JSON_LENGTH) {
    throw new OutboxPayloadError(
      payloadPath(at),
      `is ${json.length} characters as JSON, over the limit of ${MAX_PAYLOAD_JSON_LENGTH}: store large data elsewhere and send a reference`,
    );
  }
  return json;
}

function payloadPath(at: string | number): string {
  return typeof at === 'string' ? at : fieldOf(at, 'payload');
}

/**
 * Whether {@link checkJsonValue} would accept `value`, found without building a path or a set of
 * ancestors: a cycle nests past the depth limit, so it fails here too and the full check names it.
 */
function isJsonSafe(value: unknown, depth: number): boolean {
  switch (typeof value) {
    case 'string':
      return !SURROGATE_OR_NUL.test(value);
    case 'boolean':
      return true;
    case 'number':
      return Number.isFinite(value);
    case 'object':
      break;
    default:
      return false;
  }
  if (value === null) return true;
  if (depth >= MAX_PAYLOAD_DEPTH) return false;
  if (Array.isArray(value)) {
    if (Object.getPrototypeOf(value) !== Array.prototype) return false;
    for (let i = 0; i < value.length; i++) {
      if (!(i in value) || !isJsonSafe(value[i], depth + 1)) return false;
    }
    return true;
  }
  if (!isPlainObject(value) || Object.getOwnPropertySymbols(value).length > 0) return false;
  for (const key in value) {
    if (!Object.hasOwn(value, key)) return false;
    if (SURROGATE_OR_NUL.test(key) || !isJsonSafe((value as Record<string, unknown>)[key], depth + 1)) {
      return false;
    }
  }
  return true;
}

function checkJsonValue(value: unknown, path: string, ancestors: Set<object>, depth: number): void {
  switch (typeof value) {
    case 'string': {
      const problem = textProblem(value);
      if (problem !== undefined) throw new OutboxPayloadError(path, problem);
      return;
    }
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
      const problem = textProblem(key);
      if (problem !== undefined) throw new OutboxPayloadError(at, `key ${problem}`);
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
