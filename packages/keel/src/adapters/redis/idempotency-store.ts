import { createHash } from 'node:crypto';
import { InvalidOptionError } from '../../errors/keel-error.ts';
import type { IdempotencyRecord, IdempotencyStore } from '../../idempotency/store.ts';

/**
 * The part of an `ioredis` client this store calls. Keel never imports `ioredis`; pass your own
 * client (a `Redis`, or any client with the same `eval` and `get`).
 *
 * @example
 * import { Redis } from 'ioredis';
 * const client: RedisScriptClient = new Redis(process.env.REDIS_URL);
 */
export interface RedisScriptClient {
  /** `EVAL script numKeys key… arg…` */
  eval(script: string, numKeys: number, ...keysAndArgs: (string | number)[]): Promise<unknown>;
  /** `EVALSHA sha1 numKeys key… arg…`; when present, scripts are sent by digest after the first call. */
  evalsha?(sha1: string, numKeys: number, ...keysAndArgs: (string | number)[]): Promise<unknown>;
  get(key: string): Promise<string | null>;
}

/** Options of {@link redisStore}. */
export interface RedisIdempotencyStoreOptions {
  /** The user's ioredis client. */
  client: RedisScriptClient;
  /**
   * Prepended to every key. In Redis Cluster, put a hash tag in it (`'{keel:idem}:'`) so the records
   * and the lease index share a slot, as the scripts touch both.
   * @default 'keel:idem:'
   */
  prefix?: string;
}

const DEFAULTS = Object.freeze({ prefix: 'keel:idem:' });

/** Suffix of the sorted set that indexes in-flight keys by `leaseUntil`. */
const INDEX_SUFFIX = ':in-flight';

/**
 * TTL of a record written when its retention had already ended (`expiresAt` ≤ `updatedAt`): kept a
 * little while so a read right after the write still sees it; the engine treats it as absent anyway.
 */
const EXPIRED_RECORD_TTL_MS = 60_000;

/** Most index entries one `purgeExpired` call examines beyond its limit, to keep the script short. */
const PURGE_SCAN_SLACK = 1_000;

// Records are JSON with `token` as the first property, so a script checks the token by comparing a
// prefix (`{"token":"…",`) instead of decoding a record that may hold a large response.

const INSERT = `
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if ARGV[3] == '1' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
else redis.call('ZREM', KEYS[2], ARGV[5]) end
return 1`;

const REPLACE = `
local current = redis.call('GET', KEYS[1])
if not current or string.sub(current, 1, #ARGV[6]) ~= ARGV[6] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] == '1' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
else redis.call('ZREM', KEYS[2], ARGV[5]) end
return 1`;

const DELETE = `
local current = redis.call('GET', KEYS[1])
if not current or string.sub(current, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1`;

// Index entries whose record is gone (dropped by its TTL) are removed on the way.
const EXPIRED_LEASES = `
local out = {}
local limit = tonumber(ARGV[2])
local offset = 0
while #out < limit do
  local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', offset, limit - #out)
  if #members == 0 then break end
  for _, member in ipairs(members) do
    local value = redis.call('GET', ARGV[3] .. member)
    if value then
      out[#out + 1] = value
      offset = offset + 1
    else
      redis.call('ZREM', KEYS[1], member)
    end
  end
end
return out`;

// Completed records leave by their TTL. This removes index entries whose record is gone, and
// deletes in-flight records whose retention ended but whose TTL has not fired yet (clock skew).
const PURGE = `
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local budget = limit + tonumber(ARGV[4])
local removed = 0
local offset = 0
while removed < limit and budget > 0 do
  local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', offset, 100)
  if #members == 0 then break end
  for _, member in ipairs(members) do
    if removed >= limit or budget <= 0 then break end
    budget = budget - 1
    local key = ARGV[3] .. member
    local value = redis.call('GET', key)
    local expired = not value
    if value then
      local ok, record = pcall(cjson.decode, value)
      expired = ok and tonumber(record.expiresAt) < now
      if expired then redis.call('DEL', key) end
    end
    if expired then
      redis.call('ZREM', KEYS[1], member)
      removed = removed + 1
    else
      offset = offset + 1
    end
  end
end
return removed`;

function checkLimit(limit: number): number {
  if (!Number.isInteger(limit) || limit < 0) {
    throw new RangeError(`limit: must be an integer ≥ 0, got ${String(limit)}`);
  }
  return limit;
}

/** What a stored record must start with when its token is `token`. */
function tokenPrefix(token: string): string {
  return `{"token":${JSON.stringify(token)},`;
}

/**
 * An idempotency store in Redis. Each record is a JSON string under `prefix + key` whose TTL runs
 * to its `expiresAt` (never shorter than its lease), so Redis forgets finished keys on its own. The
 * TTL is measured from the record's `updatedAt`, so it follows the engine's clock (a record written
 * already past its retention is kept one minute). Insert is
 * `SET NX PX`; replace and delete are Lua scripts that check the stored token first, so they are
 * atomic. A sorted set (`prefix + ':in-flight'`) indexes in-flight keys by `leaseUntil`, kept in step
 * by the same scripts, so `expiredLeases` is a `ZRANGEBYSCORE`.
 *
 * Differences from the SQL stores: `purgeExpired` relies on the TTLs — it only cleans the in-flight
 * index (removing entries whose record is gone, and deleting in-flight records whose retention ended
 * but whose TTL has not fired yet) and returns how many index entries it removed; completed records
 * are never counted. The `tx` argument of `replace` is ignored: Redis cannot join a SQL transaction.
 *
 * @example
 * const store = redisStore({ client: new Redis(process.env.REDIS_URL) });
 * const engine = idempotency({ store });
 */
export class RedisIdempotencyStore implements IdempotencyStore {
  readonly client: RedisScriptClient;
  readonly prefix: string;
  /** The sorted set of in-flight keys, scored by `leaseUntil`. */
  readonly indexKey: string;

  constructor(options: RedisIdempotencyStoreOptions) {
    const client = options?.client;
    if (typeof client?.eval !== 'function' || typeof client.get !== 'function') {
      throw new InvalidOptionError(
        'client',
        'must be an ioredis client (an object with eval and get methods)',
      );
    }
    const prefix = options.prefix ?? DEFAULTS.prefix;
    if (typeof prefix !== 'string') {
      throw new InvalidOptionError('prefix', `must be a string, got ${typeof prefix}`);
    }
    this.client = client;
    this.prefix = prefix;
    this.indexKey = prefix + INDEX_SUFFIX;
  }

  async get(key: string): Promise<IdempotencyRecord | undefined> {
    const value = await this.client.get(this.#recordKey(key));
    return value === null ? undefined : (JSON.parse(value) as IdempotencyRecord);
  }

  async insertIfAbsent(record: IdempotencyRecord): Promise<boolean> {
    const inserted = await this.#run(
      INSERT,
      2,
      this.#recordKey(record.key),
      this.indexKey,
      ...this.#writeArgs(record),
    );
    return Number(inserted) === 1;
  }

  /** Compare-and-swap on the token. `tx` is ignored: Redis cannot join a SQL transaction. */
  async replace(expectedToken: string, record: IdempotencyRecord): Promise<boolean> {
    const replaced = await this.#run(
      REPLACE,
      2,
      this.#recordKey(record.key),
      this.indexKey,
      ...this.#writeArgs(record),
      tokenPrefix(expectedToken),
    );
    return Number(replaced) === 1;
  }

  async delete(key: string, expectedToken: string): Promise<boolean> {
    const deleted = await this.#run(
      DELETE,
      2,
      this.#recordKey(key),
      this.indexKey,
      tokenPrefix(expectedToken),
      key,
    );
    return Number(deleted) === 1;
  }

  async expiredLeases(now: number, limit: number): Promise<IdempotencyRecord[]> {
    if (checkLimit(limit) === 0) return [];
    const values = (await this.#run(EXPIRED_LEASES, 1, this.indexKey, now, limit, this.prefix)) as
      | string[]
      | null;
    return (values ?? []).map((value) => JSON.parse(value) as IdempotencyRecord);
  }

  /**
   * Cleans up to `limit` entries of the in-flight index whose retention ended before `now`, and
   * returns how many it removed. Completed records are dropped by their Redis TTL and not counted.
   */
  async purgeExpired(now: number, limit: number): Promise<number> {
    if (checkLimit(limit) === 0) return 0;
    const removed = await this.#run(PURGE, 1, this.indexKey, now, limit, this.prefix, PURGE_SCAN_SLACK);
    return Number(removed);
  }

  /**
   * Runs a script by its SHA-1 digest, so the script's text crosses the network once per server
   * rather than on every call; a server that has not cached it yet (`NOSCRIPT`: first use, a
   * restart, `SCRIPT FLUSH`) gets the text once through `EVAL`, which caches it.
   */
  async #run(script: string, numKeys: number, ...keysAndArgs: (string | number)[]): Promise<unknown> {
    if (this.client.evalsha === undefined) return this.client.eval(script, numKeys, ...keysAndArgs);
    try {
      return await this.client.evalsha(digestOf(script), numKeys, ...keysAndArgs);
    } catch (error) {
      if (!String((error as Error)?.message).startsWith('NOSCRIPT')) throw error;
      return this.client.eval(script, numKeys, ...keysAndArgs);
    }
  }

  #recordKey(key: string): string {
    if (key === INDEX_SUFFIX) {
      throw new RangeError(`key: '${INDEX_SUFFIX}' is reserved for the store's lease index`);
    }
    return this.prefix + key;
  }

  /** ARGV[1..5] of the insert and replace scripts: value, ttl, in-flight flag, score, member. */
  #writeArgs(record: IdempotencyRecord): (string | number)[] {
    // `token` first, so the scripts can check it by prefix.
    const { token, ...rest } = record;
    const value = JSON.stringify({ token, ...rest });
    const remaining = Math.ceil(Math.max(record.expiresAt, record.leaseUntil) - record.updatedAt);
    const ttl = remaining > 0 ? remaining : EXPIRED_RECORD_TTL_MS;
    const inFlight = record.state === 'in-flight';
    return [value, ttl, inFlight ? '1' : '0', record.leaseUntil, record.key];
  }
}

/**
 * Builds a {@link RedisIdempotencyStore} over the user's ioredis client.
 *
 * @example
 * import { Redis } from 'ioredis';
 * const store = redisStore({ client: new Redis(process.env.REDIS_URL), prefix: 'billing:idem:' });
 * const engine = idempotency({ store, leaseMs: 10_000 });
 */
export function redisStore(options: RedisIdempotencyStoreOptions): RedisIdempotencyStore {
  return new RedisIdempotencyStore(options);
}

const digests = new Map<string, string>();

/** The SHA-1 Redis names a script by, computed once per script. */
function digestOf(script: string): string {
  let digest = digests.get(script);
  if (digest === undefined) {
    digest = createHash('sha1').update(script).digest('hex');
    digests.set(script, digest);
  }
  return digest;
}
