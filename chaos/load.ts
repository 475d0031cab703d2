import type { ScenarioContext } from './context'

/** A job's hold time, drawn from the mix: mostly instant, a quarter 50 ms, one in twenty 2 s. */
export function holdMs(random = Math.random): number {
  const r = random()
  return r < 0.7 ? 0 : r < 0.95 ? 50 : 2000
}

/**
 * Submits `total` recorder jobs at about `perSecond`, in batches that take both submit paths (INSERT
 * below 500 rows, COPY from 500). A batch that fails (the database away) is retried; whether it had
 * committed is checked first by its marker, so no batch is ever inserted twice. Returns the ids inserted.
 */
export async function streamJobs(
  ctx: ScenarioContext,
  opts: { total: number; perSecond: number; marker: string; onProgress?: (submitted: number) => Promise<void> | void },
): Promise<number[]> {
  const ids: number[] = []
  const sizes = [100, 100, 100, 600]
  const t0 = Date.now()
  for (let n = 0, k = 0; n < opts.total; k++) {
    const size = Math.min(sizes[k % sizes.length]!, opts.total - n)
    const batch = `${opts.marker}-${k}`
    const jobs = Array.from({ length: size }, () => ({ type: 'chaosRecord', data: { ms: holdMs(), batch } }))
    ids.push(...(await submitOnce(ctx, batch, jobs)))
    n += size
    await opts.onProgress?.(n)
    // Keep to the rate: the load is a stream the servers can keep up with, not one backlog.
    const wait = t0 + (n / opts.perSecond) * 1000 - Date.now()
    if (wait > 0) await Bun.sleep(wait)
  }
  return ids
}

async function submitOnce(ctx: ScenarioContext, batch: string, jobs: { type: string; data: Record<string, unknown> }[]): Promise<number[]> {
  for (let attempt = 0; ; attempt++) {
    try {
      return (await ctx.submitter.submitJobs(jobs)).map((j) => j.id)
    } catch (err) {
      if (attempt > 240) throw err
      await Bun.sleep(250)
      // The COMMIT may have landed before the connection broke: then the rows are there.
      const found = await ctx.sql`SELECT id FROM worker_jobs WHERE data->>'batch' = ${batch} ORDER BY id`.catch(() => null)
      if (found && found.length === jobs.length) return found.map((r) => Number(r.id))
      if (found && found.length > 0) throw new Error(`batch ${batch} is half there (${found.length} of ${jobs.length} rows): a submission was not all-or-nothing`)
    }
  }
}

/** Polls until every id is finished (deadline), returning how many are not. */
export async function untilFinished(ctx: ScenarioContext, ids: readonly number[], timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const [row] = await ctx.sql`SELECT count(*)::int AS n FROM worker_jobs WHERE id = ANY(${ids as number[]}) AND finished IS NULL`.catch(() => [{ n: -1 }])
    const left = row!.n as number
    if (left === 0 || Date.now() > deadline) return left
    await Bun.sleep(500)
  }
}
