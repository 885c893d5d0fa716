/**
 * Waiting for the event loop's next turn.
 *
 * @module
 */

/**
 * Resolves on the event loop's next turn (`setImmediate`): after every promise callback queued
 * before it, and after the I/O and timers that were waiting.
 *
 * @example
 * await nextTurn(); // requests and timers that were due have had their turn
 */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
