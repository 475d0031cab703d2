/** Progress for a person watching: one line per step on stderr, with the time since the run began. */
const t0 = performance.now()

function stamp(): string {
  return `[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)}s]`
}

export function step(msg: string): void {
  process.stderr.write(`${stamp()} ${msg}\n`)
}

/** A line that rewrites itself on a terminal and is throttled to one line per second otherwise. */
export function progressLine(): { update(msg: string): void; done(msg?: string): void } {
  const tty = process.stderr.isTTY
  let last = 0
  return {
    update(msg) {
      const now = performance.now()
      if (tty) process.stderr.write(`\r\x1b[K${stamp()}   ${msg}`)
      else if (now - last >= 1000) {
        last = now
        process.stderr.write(`${stamp()}   ${msg}\n`)
      }
    },
    done(msg) {
      if (tty) process.stderr.write('\r\x1b[K')
      if (msg) step(`  ${msg}`)
    },
  }
}
