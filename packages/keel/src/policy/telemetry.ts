/**
 * The one event vocabulary every policy speaks. Policies never import metrics or loggers: they emit
 * these events, and `keel/observe` (or your own listener) turns them into metrics, logs and alerts.
 *
 * @module
 */
import type { RejectionError } from '../errors/keel-error.ts';

/** Which kind of policy emitted an event. */
export type PolicyKind =
  | 'timeout'
  | 'retry'
  | 'breaker'
  | 'bulkhead'
  | 'limiter'
  | 'rate-limiter'
  | 'throttle'
  | 'hedge'
  | 'fallback'
  | 'failover'
  | 'pipeline';

interface EventBase {
  /** The kind of policy that emitted the event. */
  readonly policy: PolicyKind;
  /** The policy's name, usually the dependency it guards (`'provider-a'`, `'postgres'`). */
  readonly name: string;
}

/** Every event a policy can emit. Switch on `type`. */
export type PolicyEvent =
  | (EventBase & { readonly type: 'success'; readonly durationMs: number })
  | (EventBase & { readonly type: 'failure'; readonly durationMs: number; readonly error: unknown })
  | (EventBase & {
      readonly type: 'retry';
      /** The attempt about to start (2 for the first retry). */
      readonly attempt: number;
      readonly delayMs: number;
      readonly error: unknown;
    })
  | (EventBase & { readonly type: 'budget-exhausted'; readonly attempt: number; readonly error: unknown })
  | (EventBase & { readonly type: 'rejection'; readonly error: RejectionError })
  | (EventBase & { readonly type: 'timeout'; readonly durationMs: number })
  | (EventBase & { readonly type: 'state-change'; readonly from: string; readonly to: string })
  | (EventBase & { readonly type: 'limit-change'; readonly limit: number; readonly inflight: number })
  | (EventBase & { readonly type: 'hedge'; readonly attempt: number; readonly delayMs: number })
  | (EventBase & {
      readonly type: 'failover';
      readonly from: string;
      readonly to: string;
      readonly error: unknown;
    })
  | (EventBase & { readonly type: 'fallback'; readonly error: unknown });

/** The type names of {@link PolicyEvent}. */
export type PolicyEventType = PolicyEvent['type'];

/** Narrows {@link PolicyEvent} to one type. */
export type PolicyEventOf<T extends PolicyEventType> = Extract<PolicyEvent, { type: T }>;

/** A sink for policy events, shared by many policies (a metrics binder, a logger). */
export interface Telemetry {
  emit(event: PolicyEvent): void;
}

/** Returned by every subscription; call `dispose()` to unsubscribe. */
export interface Disposable {
  dispose(): void;
}

/** A listener of policy events. */
export type PolicyListener = (event: PolicyEvent) => void;

/**
 * The emitting half a policy owns. Policies check `active` before building an event object, so a
 * policy nobody listens to allocates nothing for telemetry.
 */
export class EventSource {
  readonly policy: PolicyKind;
  readonly name: string;
  readonly #sink: Telemetry | undefined;
  #listeners: PolicyListener[] = [];
  /** True when a sink or at least one listener would receive an event. */
  active: boolean;

  constructor(policy: PolicyKind, name: string, sink?: Telemetry) {
    this.policy = policy;
    this.name = name;
    this.#sink = sink;
    this.active = sink !== undefined;
  }

  /** Subscribes `listener` to every event; returns a disposer. */
  subscribe(listener: PolicyListener): Disposable {
    this.#listeners = [...this.#listeners, listener];
    this.active = true;
    return {
      dispose: () => {
        this.#listeners = this.#listeners.filter((l) => l !== listener);
        this.active = this.#sink !== undefined || this.#listeners.length > 0;
      },
    };
  }

  /** Delivers an event. A throwing listener never breaks the call that emitted it. */
  emit(event: PolicyEvent): void {
    if (this.#sink) deliver(this.#sink.emit, this.#sink, event);
    const listeners = this.#listeners;
    for (let i = 0; i < listeners.length; i++) deliver(listeners[i] as PolicyListener, undefined, event);
  }
}

function deliver(fn: PolicyListener, self: unknown, event: PolicyEvent): void {
  try {
    fn.call(self, event);
  } catch (err) {
    process.emitWarning(`A Keel telemetry listener threw: ${String(err)}`, { code: 'KEEL_LISTENER_THREW' });
  }
}
