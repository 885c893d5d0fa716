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

/** Character codes of the hex digits `0`–`f`. */
const HEX_CODES = Array.from('0123456789abcdef', (digit) => digit.charCodeAt(0));
/** Where each of the 16 bytes' two hex digits start in the 36-character text. */
const BYTE_AT = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
const DASH = '-'.charCodeAt(0);

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
  /** Where `count` fresh random bytes start in `pool`. */
  const reserve = (count: number): number => {
    if (poolOffset + count > POOL_SIZE) {
      randomFill(pool);
      poolOffset = 0;
    }
    const at = poolOffset;
    poolOffset += count;
    return at;
  };
  let lastMs = -1;
  let counter = 0;
  // The text as character codes, dashes in place: each id overwrites the digits and becomes one flat
  // string, where twenty concatenations would make a rope that every map lookup by id flattens.
  const codes: number[] = new Array(36).fill(DASH);
  const write = (byteIndex: number, byte: number) => {
    const at = BYTE_AT[byteIndex] as number;
    codes[at] = HEX_CODES[byte >>> 4] as number;
    codes[at + 1] = HEX_CODES[byte & 0x0f] as number;
  };

  return () => {
    const now = Math.floor(clock.now());
    if (!Number.isFinite(now) || now < 0 || now > MAX_MS) {
      throw new RangeError(`uuidv7: clock.now() must be epoch milliseconds, got ${String(now)}`);
    }
    if (now > lastMs) {
      const seed = reserve(6);
      // A seed below 2^41 leaves at least 2^41 increments of headroom. 41 random bits: 1 from the first byte's low bit and 40 from the next five.
      counter =
        (((pool[seed] as number) & 0x01) * 2 ** 40 +
          (pool[seed + 1] as number) * 2 ** 32 +
          (((pool[seed + 2] as number) << 24) |
            ((pool[seed + 3] as number) << 16) |
            ((pool[seed + 4] as number) << 8) |
            (pool[seed + 5] as number))) >>>
        0;
      lastMs = now;
    } else {
      // Same millisecond, or the clock stepped back: keep the last time and count up.
      counter += 1;
      if (counter >= COUNTER_LIMIT) {
        lastMs += 1;
        counter = Math.floor((pool[reserve(1)] as number) / 2);
      }
    }
    const tail = reserve(4);
    const counterHigh = Math.floor(counter / 2 ** 30); // 12 bits: rand_a
    const counterLow = counter % 2 ** 30; // 30 bits: the top of rand_b
    let ms = lastMs;
    for (let i = 5; i >= 0; i--) {
      write(i, ms % 256);
      ms = Math.floor(ms / 256);
    }
    write(6, 0x70 | (counterHigh >>> 8));
    write(7, counterHigh & 0xff);
    write(8, 0x80 | (counterLow >>> 24));
    write(9, (counterLow >>> 16) & 0xff);
    write(10, (counterLow >>> 8) & 0xff);
    write(11, counterLow & 0xff);
    for (let i = 0; i < 4; i++) write(12 + i, pool[tail + i] as number);
    return String.fromCharCode.apply(null, codes);
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
