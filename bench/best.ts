/** Runs a throughput measurement `n` times and keeps the fastest; every run stays in the results. */
export async function bestOf<T extends { jobsPerSec: number }>(n: number, run: (i: number) => Promise<T>): Promise<T & { runs: number[] }> {
  const all: T[] = []
  for (let i = 0; i < n; i++) all.push(await run(i))
  const best = all.reduce((a, b) => (b.jobsPerSec > a.jobsPerSec ? b : a))
  return { ...best, runs: all.map((r) => r.jobsPerSec) }
}
