/**
 * @module
 * What a provider counts about itself, served by `GET /__stats`: the lab compares these with what
 * its clients saw (a dropped response is a charge the client never heard of).
 */

/** Counters since the provider started, plus two gauges read at the time of asking. */
export interface ProviderStats {
  /** `POST /charges` requests received, valid or not. */
  requests: number;
  /** Charges committed by this process. */
  charges: number;
  /** Requests answered from a stored idempotency record. */
  replays: number;
  /** 409s: the same key while its first request was still in progress. */
  conflicts: number;
  /** 400s: a key already used with different parameters. */
  keyReuses: number;
  /** Injected 500/502/503/429 answers. */
  errorsInjected: number;
  /** 503s answered because of an outage window. */
  outageRejections: number;
  /** Charges committed whose response was dropped by destroying the socket. */
  droppedResponses: number;
  /** Held requests whose client gave up (or that the shutdown let go) before the hang ended. */
  abandoned: number;
  /** Requests held by a hang right now. */
  hanging: number;
  /** Charges in the ledger, including those of earlier runs on the same file. */
  ledgerCharges: number;
}

/** The counters a provider keeps; the gauges are filled in when asked. */
export type ProviderCounters = Omit<ProviderStats, 'hanging' | 'ledgerCharges'>;

export function zeroCounters(): ProviderCounters {
  return {
    requests: 0,
    charges: 0,
    replays: 0,
    conflicts: 0,
    keyReuses: 0,
    errorsInjected: 0,
    outageRejections: 0,
    droppedResponses: 0,
    abandoned: 0,
  };
}
