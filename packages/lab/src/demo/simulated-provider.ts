import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A payment provider in-process: answers after `latencyMs`, or, while `hanging`, not until the
 * hang ends. Honours the caller's signal the way a real HTTP client does.
 */
export class SimulatedProvider {
  readonly name: string;
  readonly latencyMs: number;
  hanging = false;
  charged = 0;
  readonly #hung = new Set<() => void>();

  constructor(name: string, latencyMs: number) {
    this.name = name;
    this.latencyMs = latencyMs;
  }

  async charge(signal?: AbortSignal): Promise<string> {
    if (this.hanging) {
      await new Promise<void>((resolve, reject) => {
        const done = () => {
          this.#hung.delete(done);
          resolve();
        };
        this.#hung.add(done);
        signal?.addEventListener('abort', () => {
          this.#hung.delete(done);
          reject(signal.reason);
        });
      });
    } else {
      await sleep(this.latencyMs, undefined, signal ? { signal } : undefined);
    }
    this.charged++;
    return `${this.name}-${this.charged}`;
  }

  /** Ends a hang: every call that was stuck answers now. */
  recover(): void {
    this.hanging = false;
    for (const done of [...this.#hung]) done();
  }
}
