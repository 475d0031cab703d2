import { round } from './stats'

/** One row of the comparison table: ours against one peer (or reference) on one measure. */
export interface Row {
  scenario: string
  unit: string
  better: 'higher' | 'lower'
  ours: number | null
  peer: string
  peerValue: number | null
  /** ours / peer */
  ratio: number | null
  note?: string
}

export interface Target {
  target: string
  actual: string
  met: boolean
}

export function row(r: Omit<Row, 'ratio'>): Row {
  const ratio = r.ours !== null && r.peerValue !== null && r.peerValue !== 0 && Number.isFinite(r.ours) && Number.isFinite(r.peerValue) ? round(r.ours / r.peerValue, 3) : null
  return { ...r, ratio }
}

const fmt = (v: number | null): string => {
  if (v === null || !Number.isFinite(v)) return 'n/a'
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString('en-US')
  if (Math.abs(v) >= 100) return String(Math.round(v))
  return String(round(v, 2))
}

export function markdownTable(rows: readonly Row[]): string {
  const lines = [
    '| Scenario | Unit | Ours | Compared with | Their value | Ours / theirs | Better |',
    '|---|---|---:|---|---:|---:|---|',
  ]
  for (const r of rows) {
    const ratio = r.ratio === null ? 'n/a' : `${r.ratio.toFixed(r.ratio >= 100 ? 0 : r.ratio >= 10 ? 1 : 2)}x`
    lines.push(`| ${r.scenario} | ${r.unit} | ${fmt(r.ours)} | ${r.peer}${r.note ? ` (${r.note})` : ''} | ${fmt(r.peerValue)} | ${ratio} | ${r.better} |`)
  }
  return lines.join('\n')
}

export function targetsTable(targets: readonly Target[]): string {
  const lines = ['| Target | Measured | Met |', '|---|---|---|']
  for (const t of targets) lines.push(`| ${t.target} | ${t.actual} | ${t.met ? 'yes' : '**no**'} |`)
  return lines.join('\n')
}
