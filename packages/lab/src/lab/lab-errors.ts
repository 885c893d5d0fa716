/**
 * @module
 * Errors the failure lab throws from its own code: a service instance that would not start, a
 * database the checker cannot read, a scenario that cannot run. Each extends Keel's `KeelError`
 * with a stable `KEEL_LAB_*` code, so the command and the tests branch on the code, not the text.
 */
import { KeelError } from 'keel';

/** A service instance exited or stayed silent before it printed its URL. */
export class InstanceStartError extends KeelError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KEEL_LAB_INSTANCE_START', message, options);
  }
}

/** The ground-truth checker could not read a provider's ledger or the service's database. */
export class GroundTruthError extends KeelError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KEEL_LAB_GROUND_TRUTH', message, options);
  }
}

/** The lab was asked for something it does not have, e.g. an unknown scenario name. */
export class UnknownScenarioError extends KeelError {
  readonly scenario: string;

  constructor(scenario: string, known: readonly string[]) {
    super('KEEL_LAB_UNKNOWN_SCENARIO', `unknown scenario '${scenario}'; known: ${known.join(', ')}`);
    this.scenario = scenario;
  }
}
