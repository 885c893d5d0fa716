/**
 * Crash points: named places in multi-step code where a test can make the process die at once
 * (SIGKILL — no `finally`, no flush), to prove that every recovery point really recovers. Disarmed
 * crash points cost one comparison.
 *
 * @module
 */

/** Environment variable a child process reads to learn where to die. */
export const CRASH_AT_ENV = 'KEEL_CRASH_AT';

/** Where a {@link CrashPoints} instance is told to die. */
export interface CrashPointsOptions {
  /**
   * The crash point to die at, or undefined for none.
   * @default process.env.KEEL_CRASH_AT
   */
  armed?: string | undefined;
  /**
   * What dying means. Tests in one process can pass a function that throws instead.
   * @default SIGKILL to this process
   */
  crash?: (point: string) => void;
}

/**
 * A set of named crash points. Code calls `reached(name)` at each; the one that is armed kills the
 * process. Every name ever reached is remembered, so a test can list them and crash at each in turn.
 *
 * @example
 * const crash = new CrashPoints(); // armed by KEEL_CRASH_AT in a child process
 * await chargeWithPhases(lease, { crash });
 */
export class CrashPoints {
  readonly armed: string | undefined;
  readonly #crash: (point: string) => void;
  readonly #seen = new Set<string>();

  constructor(options: CrashPointsOptions = {}) {
    this.armed = 'armed' in options ? options.armed : process.env[CRASH_AT_ENV];
    this.#crash = options.crash ?? (() => process.kill(process.pid, 'SIGKILL'));
  }

  /** Marks `point` as reached, and dies there when it is the armed one. */
  reached(point: string): void {
    this.#seen.add(point);
    if (point === this.armed) this.#crash(point);
  }

  /** Every crash point reached so far, in order of first arrival. */
  get seen(): readonly string[] {
    return [...this.#seen];
  }
}
