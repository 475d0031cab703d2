import { Cron } from 'croner'

/**
 * Cron expressions are evaluated in UTC, so a schedule means the same thing on every server whatever
 * its local time zone. Both 5-field (minute precision) and 6-field (seconds first) forms are accepted.
 */
export const CRON_TIMEZONE = 'UTC'

/** Longer than any real schedule: croner parses `30 2` (30 February) happily, it just never fires. */
const MAX_EXPRESSION_LENGTH = 200

export class CronError extends Error {
  constructor(expr: string, detail: string) {
    super(`cron expression ${JSON.stringify(expr.slice(0, MAX_EXPRESSION_LENGTH))} ${detail}`)
    this.name = 'CronError'
  }
}

function parse(expr: string): Cron {
  if (typeof expr !== 'string' || expr.length > MAX_EXPRESSION_LENGTH) throw new CronError(String(expr), 'is too long')
  const fields = expr.trim().split(/\s+/).length
  if (fields < 5 || fields > 6) throw new CronError(expr, `has ${fields} fields; expected 5 or 6`)
  try {
    return new Cron(expr, { paused: true, timezone: CRON_TIMEZONE })
  } catch (err) {
    throw new CronError(expr, `is invalid: ${err instanceof Error ? err.message : String(err)}`)
  }
}

/** The first run strictly after `after`. Pure: the caller passes the clock. Throws CronError when there is none. */
export function nextCronRun(expr: string, after: Date): Date {
  const next = parse(expr).nextRun(after)
  if (!next) throw new CronError(expr, 'has no future run')
  return next
}

/**
 * Why a cron string is refused, or null when it is valid. Valid means: it parses *and* it has a next run,
 * so a schedule that can never fire (`0 0 30 2 *`) is refused where it enters (submit, config), instead of
 * failing later inside the transaction that records the previous run.
 */
export function cronProblem(expr: string, now = new Date()): string | null {
  try {
    nextCronRun(expr, now)
    return null
  } catch (err) {
    return err instanceof Error ? err.message : String(err)
  }
}

export const isValidCron = (expr: string): boolean => cronProblem(expr) === null
