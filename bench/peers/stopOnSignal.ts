/** A peer's worker process stops gracefully on SIGINT/SIGTERM; a second signal exits at once. */
export function stopOnSignal(stop: () => Promise<unknown>): void {
  let stopping = false
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      if (stopping) process.exit(1)
      stopping = true
      stop().then(
        () => process.exit(0),
        () => process.exit(1),
      )
    })
  }
}
