/** Runs a measurement `n` times and keeps the fastest by `rate`; every run's rate stays in the results. */
export async function bestOf<T>(n: number, run: (i: number) => Promise<T>, rate: (t: T) => number): Promise<T & { runs: number[] }> {
  const all: T[] = []
  for (let i = 0; i < n; i++) all.push(await run(i))
  const best = all.reduce((a, b) => (rate(b) > rate(a) ? b : a))
  return { ...best, runs: all.map(rate) }
}

export const jobsPerSec = (t: { jobsPerSec: number }) => t.jobsPerSec
