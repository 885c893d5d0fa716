/**
 * Event ids as UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then a 42-bit counter seeded at random
 * each millisecond, then 32 random bits. Ids sort by creation time — the outbox's indexes stay
 * append-only and a broker's dedup window sees them in order — and ids made in one process are
 * strictly increasing, even within one millisecond or while the wall clock steps back.
 *
 * @module
 */
import { InvalidOptionError } from '../errors/keel-error.ts';
import type { WallClock } from '../idempotency/store.ts';
import { wallClock } from '../idempotency/store.ts';

/** Fills `bytes` with cryptographically strong random values. */
export type RandomFill = (bytes: Uint8Array) => void;

/** Options of {@link uuidV7Generator}. */
export interface UuidV7Options {
  /** @default wallClock */
  clock?: WallClock;
  /** @default crypto.getRandomValues */
  randomFill?: RandomFill;
}

/** Largest millisecond a UUIDv7 can hold (48 bits). */
const MAX_MS = 2 ** 48 - 1;
/** The counter spans the 12 bits of `rand_a` and the top 30 bits of `rand_b`. */
const COUNTER_LIMIT = 2 ** 42;
/** Random bytes drawn per refill, so one id costs no system call. */
const POOL_SIZE = 256;

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

const defaultRandomFill: RandomFill = (bytes) => {
  globalThis.crypto.getRandomValues(bytes);
};

/** A source of UUIDv7 strings, monotonic across its calls. */
export type UuidV7Generator = () => string;

/**
 * A generator with its own clock and monotonic state. Most code uses {@link uuidv7}; tests pass a
 * clock to get predictable timestamps.
 *
 * @example
 * const nextId = uuidV7Generator({ clock: { now: () => Date.parse('2026-01-01') } });
 * nextId(); // '019b7642-…'
 */
export function uuidV7Generator(options: UuidV7Options = {}): UuidV7Generator {
  const clock = options.clock ?? wallClock;
  if (typeof clock?.now !== 'function') {
    throw new InvalidOptionError('clock', 'must have a now() method returning epoch milliseconds');
  }
  const randomFill = options.randomFill ?? defaultRandomFill;
  if (typeof randomFill !== 'function') {
    throw new InvalidOptionError('randomFill', `must be a function, got ${typeof randomFill}`);
  }
  const pool = new Uint8Array(POOL_SIZE);
  let poolOffset = POOL_SIZE;
  const random = (count: number): Uint8Array => {
    if (poolOffset + count > POOL_SIZE) {
      randomFill(pool);
      poolOffset = 0;
    }
    const bytes = pool.subarray(poolOffset, poolOffset + count);
    poolOffset += count;
    return bytes;
  };
  let lastMs = -1;
  let counter = 0;

  return () => {
    const now = Math.floor(clock.now());
    if (!Number.isFinite(now) || now < 0 || now > MAX_MS) {
      throw new RangeError(`uuidv7: clock.now() must be epoch milliseconds, got ${String(now)}`);
    }
    if (now > lastMs) {
      const seed = random(6);
      // A seed below 2^41 leaves at least 2^41 increments of headroom. 41 random bits: 1 from the first byte's low bit and 40 from the next five.
      counter =
        (((seed[0] as number) & 0x01) * 2 ** 40 +
          (seed[1] as number) * 2 ** 32 +
          (((seed[2] as number) << 24) |
            ((seed[3] as number) << 16) |
            ((seed[4] as number) << 8) |
            (seed[5] as number))) >>>
        0;
      lastMs = now;
    } else {
      // Same millisecond, or the clock stepped back: keep the last time and count up.
      counter += 1;
      if (counter >= COUNTER_LIMIT) {
        lastMs += 1;
        counter = Math.floor((random(1)[0] as number) / 2);
      }
    }
    const tail = random(4);
    const counterHigh = Math.floor(counter / 2 ** 30); // 12 bits: rand_a
    const counterLow = counter % 2 ** 30; // 30 bits: the top of rand_b
    const bytes = new Uint8Array(16);
    let ms = lastMs;
    for (let i = 5; i >= 0; i--) {
      bytes[i] = ms % 256;
      ms = Math.floor(ms / 256);
    }
    bytes[6] = 0x70 | (counterHigh >>> 8);
    bytes[7] = counterHigh & 0xff;
    bytes[8] = 0x80 | (counterLow >>> 24);
    bytes[9] = (counterLow >>> 16) & 0xff;
    bytes[10] = (counterLow >>> 8) & 0xff;
    bytes[11] = counterLow & 0xff;
    bytes.set(tail, 12);
    let text = '';
    for (let i = 0; i < 16; i++) {
      if (i === 4 || i === 6 || i === 8 || i === 10) text += '-';
      text += HEX[bytes[i] as number];
    }
    return text;
  };
}

let shared: UuidV7Generator | undefined;

/**
 * A new UUIDv7 on the wall clock, from a generator shared by the process so ids stay increasing.
 *
 * @example
 * const id = uuidv7(); // '0190b6c2-5c3e-7a1d-8f4e-3b9d2c1a0e7f'
 */
export function uuidv7(): string {
  shared ??= uuidV7Generator();
  return shared();
}

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/**
 * True for a lower-case UUIDv7 string.
 *
 * @example
 * isUuidV7(uuidv7()); // true
 */
export function isUuidV7(value: unknown): value is string {
  return typeof value === 'string' && UUID_V7.test(value);
}

/**
 * The millisecond timestamp inside a UUIDv7.
 *
 * @example
 * uuidV7Time(uuidv7()) <= Date.now(); // true
 */
export function uuidV7Time(id: string): number {
  if (!isUuidV7(id)) throw new TypeError(`not a UUIDv7: ${JSON.stringify(id)}`);
  return Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
}
