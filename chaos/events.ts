/** What the driver did to the system, and when (this machine's clock, epoch ms). */
export type FaultKind = 'child-kill' | 'server-kill' | 'pg-restart-fast' | 'pg-restart-immediate' | 'terminate-backends' | 'partition'

export interface FaultEvent {
  kind: FaultKind
  at: number
  /** When the fault was over: Postgres accepting again, the partition healed; `at` for a kill. */
  end: number
  /** The server it hit, for kills and partitions. */
  server?: string
  /** The processes it killed. */
  pids?: number[]
}

/** Faults that hit every server at once: connections lost, the database away. */
export const DATABASE_FAULTS: ReadonlySet<FaultKind> = new Set(['pg-restart-fast', 'pg-restart-immediate', 'terminate-backends'])

export class EventLog {
  readonly events: FaultEvent[] = []

  add(e: FaultEvent): FaultEvent {
    this.events.push(e)
    return e
  }

  /** When each killed pid died. */
  killedAt(): Map<number, number> {
    const out = new Map<number, number>()
    // A process dies once: a later kill of the same pid (a zombie not yet reaped) must not move its death.
    for (const e of this.events) for (const p of e.pids ?? []) if (!out.has(p)) out.set(p, e.at)
    return out
  }

  count(kind: FaultKind): number {
    return this.events.filter((e) => e.kind === kind).length
  }
}
