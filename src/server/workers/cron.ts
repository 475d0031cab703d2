import { Cron } from 'croner'

/**
 * Cron expressions are evaluated in UTC, so a schedule means the same thing on every server whatever
 * its local time zone. Both 5-field (minute precision) and 6-field (seconds first) forms are accepted.
 */
export const CRON_TIMEZONE = 'UTC'

/** The first run strictly after `after`. Pure: the caller passes the clock. */
export function nextCronRun(expr: string, after: Date): Date {
  const next = new Cron(expr, { paused: true, timezone: CRON_TIMEZONE }).nextRun(after)
  if (!next) throw new Error(`cron expression "${expr}" has no future run`)
  return next
}
