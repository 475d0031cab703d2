// The admin jobs dashboard, in the browser. No framework, no build step: served as is by routes.ts.
//
// Rules this file keeps:
// - Every piece of data (types, tags, job data, results, errors) is untrusted user input: the DOM is built
//   with createElement and textContent only, never innerHTML, and no attribute is set from data except
//   hrefs built from numeric ids.
// - One data path: everything is read and done through POST /graphql, with the session cookie (sent by
//   the browser) and the CSRF token of this page's <meta name="csrf-token"> in X-CSRF-Token.
// - The view and the jobs list's filters live in the URL hash (#jobs?status=FAILED&page=2), so a refresh,
//   a reload or a shared link keeps them; the data refreshes itself every REFRESH_MS.

const REFRESH_MS = 5000
const PAGE_SIZE = 25
const STATUSES = ['PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED']
const ORDERS = [
  ['NEWEST_FIRST', 'newest first'],
  ['OLDEST_FIRST', 'oldest first'],
  ['DUE_FIRST', 'due: earliest first'],
  ['DUE_LAST', 'due: latest first'],
]

// ---------------------------------------------------------------------------------------------------------
// DOM helpers

/** An element with attributes and children (strings become text nodes). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue
    if (k === 'class') el.className = v
    else if (k === 'text') el.textContent = v
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v)
    else el.setAttribute(k, v === true ? '' : String(v))
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue
    el.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c)
  }
  return el
}

const SVG = 'http://www.w3.org/2000/svg'
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag)
  for (const [k, v] of Object.entries(attrs ?? {})) el.setAttribute(k, String(v))
  for (const c of children) el.append(typeof c === 'string' ? document.createTextNode(c) : c)
  return el
}

const isId = (id) => typeof id === 'string' && /^\d{1,16}$/.test(id)
const jobLink = (id) => (isId(String(id)) ? h('a', { href: `#job/${id}` }, `#${id}`) : h('span', {}, String(id)))

function when(iso) {
  if (!iso) return '—'
  const d = new Date(iso)
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString()
}

function duration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—'
  if (ms < 1000) return `${Math.round(ms)} ms`
  const sec = ms / 1000
  if (sec < 60) return `${sec.toFixed(1)} s`
  const m = Math.floor(sec / 60)
  if (m < 60) return `${m} min ${Math.round(sec % 60)} s`
  const hr = Math.floor(m / 60)
  if (hr < 48) return `${hr} h ${m % 60} min`
  return `${Math.floor(hr / 24)} d ${hr % 24} h`
}

const statusBadge = (status) => h('span', { class: `badge ${String(status).toLowerCase()}` }, String(status))

/** JSON for display, in a <pre> (as text: a string holding markup stays text). */
const jsonBlock = (value, cls) => h('pre', { class: `json ${cls ?? ''}` }, value === undefined ? '' : JSON.stringify(value, null, 2))

/** A table that stacks into cards on a phone: each cell carries its column's name. */
function table(columns, rows, cls) {
  return h(
    'div',
    { class: 'table-box' },
    h(
      'table',
      { class: `stack ${cls ?? ''}` },
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
      h(
        'tbody',
        {},
        rows.length === 0
          ? h('tr', {}, h('td', { colspan: columns.length, class: 'muted' }, 'nothing here'))
          : rows.map((r) =>
              h(
                'tr',
                { class: r.class },
                r.cells.map((cell, i) => h('td', { 'data-label': columns[i] }, cell)),
              ),
            ),
      ),
    ),
  )
}

// ---------------------------------------------------------------------------------------------------------
// The API

const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.getAttribute('content') ?? null

class ApiError extends Error {}

/** One GraphQL request. Without a session that holds (401) the page reloads: the server shows the login form. */
async function gql(query, variables, opts = {}) {
  const headers = { 'content-type': 'application/json', accept: 'application/json' }
  const csrf = csrfToken()
  if (csrf && !opts.anonymous) headers['x-csrf-token'] = csrf
  const res = await fetch('/graphql', { method: 'POST', headers, body: JSON.stringify({ query, variables }), credentials: 'same-origin' })
  if (res.status === 401 && !opts.anonymous) {
    window.location.reload()
    throw new ApiError('signed out')
  }
  const body = await res.json().catch(() => null)
  if (!body) throw new ApiError(`HTTP ${res.status}`)
  if (body.errors?.length) throw new ApiError(body.errors.map((e) => e.message).join('; '))
  return body.data
}

const JOB_FIELDS = `id type userId status due started finished success attempt maxAttempts tag priority cronSchedule
  rescheduledFromJob lastError cancelledAt createdAt`

// ---------------------------------------------------------------------------------------------------------
// Routing: #overview, #workers, #jobs?filters, #job/<id>

function route() {
  const raw = window.location.hash.replace(/^#/, '')
  const [path, query] = raw.split('?', 2)
  const params = new URLSearchParams(query ?? '')
  const m = /^job\/(\d{1,16})$/.exec(path)
  if (m) return { view: 'job', id: m[1], params }
  if (path === 'workers' || path === 'jobs') return { view: path, params }
  return { view: 'overview', params }
}

function setHashParams(view, params) {
  const q = new URLSearchParams()
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== null && v !== undefined) q.set(k, String(v))
  const text = q.toString()
  window.location.hash = text ? `${view}?${text}` : view
}

// ---------------------------------------------------------------------------------------------------------
// Views. Each has mount(root, route) (builds what stays: forms, headings) returning refresh(), which
// reads the API and replaces only the data parts, so a refresh never loses what the user is typing.

const views = {
  overview(root) {
    const totals = h('div', { class: 'tiles' })
    const chart = h('div', { class: 'chart-box' })
    const failures = h('div')
    const counts = h('div')
    root.append(
      h('h2', {}, 'Overview'),
      totals,
      h('section', { class: 'card' }, h('h3', {}, 'Jobs finished per minute, last hour'), chart),
      h('section', { class: 'card failures' }, h('h3', {}, 'Latest failures'), failures),
      h('section', { class: 'card' }, h('h3', {}, 'Jobs by type and status'), counts),
    )
    return async () => {
      const d = await gql(`{
        workerStatus { counts { type status count } }
        finishedPerMinute(minutes: 60) { minute succeeded failed }
        jobs(filter: { status: FAILED }, limit: 5) { items { id type finished result } total }
      }`)
      const byStatus = Object.fromEntries(STATUSES.map((st) => [st, 0]))
      const byType = new Map()
      for (const c of d.workerStatus.counts) {
        byStatus[c.status] = (byStatus[c.status] ?? 0) + c.count
        if (!byType.has(c.type)) byType.set(c.type, Object.fromEntries(STATUSES.map((st) => [st, 0])))
        byType.get(c.type)[c.status] = c.count
      }
      totals.replaceChildren(
        ...STATUSES.map((st) =>
          h(
            'a',
            { class: `tile ${st.toLowerCase()}${st === 'FAILED' && byStatus[st] > 0 ? ' alert' : ''}`, href: `#jobs?status=${st}` },
            h('span', { class: 'tile-n' }, String(byStatus[st])),
            h('span', { class: 'tile-label' }, st.toLowerCase()),
          ),
        ),
      )
      chart.replaceChildren(minuteChart(d.finishedPerMinute))
      failures.replaceChildren(
        table(
          ['job', 'type', 'finished', 'error'],
          d.jobs.items.map((j) => ({
            class: 'failed-row',
            cells: [jobLink(j.id), j.type, when(j.finished), h('span', { class: 'error-text' }, errorOf(j.result) ?? '—')],
          })),
        ),
      )
      counts.replaceChildren(
        table(
          ['type', ...STATUSES.map((st) => st.toLowerCase())],
          [...byType.entries()].map(([type, c]) => ({
            class: c.FAILED > 0 ? 'has-failures' : undefined,
            cells: [
              h('a', { href: `#jobs?type=${encodeURIComponent(type)}` }, type),
              ...STATUSES.map((st) => h('span', { class: st === 'FAILED' && c[st] > 0 ? 'bad' : undefined }, String(c[st]))),
            ],
          })),
        ),
      )
    }
  },

  workers(root) {
    const servers = h('div')
    const crons = h('div')
    root.append(
      h('h2', {}, 'Workers'),
      h('section', { class: 'card' }, h('h3', {}, 'Worker processes, every server on the database'), servers),
      h('section', { class: 'card' }, h('h3', {}, 'Next cron runs'), crons),
    )
    return async () => {
      const d = await gql(`{
        workerStatus {
          servers { id hostname pid live lastSeenAt startedAt workers { id pid alive healthy problem restarts runningJobs startedAt } }
          crons { jobId type userId tag cronSchedule nextRun }
        }
      }`)
      const now = Date.now()
      const rows = []
      for (const srv of d.workerStatus.servers) {
        for (const w of srv.workers) {
          const ok = srv.live && w.alive && w.healthy
          rows.push({
            class: ok ? undefined : 'has-failures',
            cells: [
              `${srv.hostname} (pid ${srv.pid})${srv.live ? '' : ' — not seen for 30 s'}`,
              w.id,
              w.pid === null ? '—' : String(w.pid),
              h('span', { class: w.alive ? 'good' : 'bad' }, w.alive ? 'alive' : 'dead'),
              h('span', { class: w.healthy ? 'good' : 'bad' }, w.healthy ? 'healthy' : (w.problem ?? 'unhealthy')),
              String(w.restarts),
              String(w.runningJobs),
              w.startedAt ? duration(now - new Date(w.startedAt).getTime()) : '—',
            ],
          })
        }
      }
      servers.replaceChildren(table(['server', 'worker', 'pid', 'alive', 'health', 'restarts', 'running jobs', 'uptime'], rows))
      crons.replaceChildren(
        table(
          ['job', 'type', 'schedule', 'next run', 'tag'],
          d.workerStatus.crons.map((c) => ({ cells: [jobLink(c.jobId), c.type, c.cronSchedule, when(c.nextRun), c.tag ?? '—'] })),
        ),
      )
    }
  },

  jobs(root, r) {
    const p = r.params
    const field = (label, input) => h('label', { class: 'field' }, h('span', {}, label), input)
    const type = h('input', { name: 'type', value: p.get('type') ?? '', maxlength: 200, placeholder: 'any', autocomplete: 'off' })
    const status = h('select', { name: 'status' }, h('option', { value: '' }, 'any'), STATUSES.map((st) => h('option', { value: st, selected: p.get('status') === st }, st.toLowerCase())))
    const user = h('input', { name: 'userId', value: p.get('userId') ?? '', inputmode: 'numeric', pattern: '\\d*', placeholder: 'any', autocomplete: 'off' })
    const tag = h('input', { name: 'tag', value: p.get('tag') ?? '', maxlength: 200, placeholder: 'any', autocomplete: 'off' })
    const order = h('select', { name: 'order' }, ORDERS.map(([v, label]) => h('option', { value: v, selected: (p.get('order') ?? 'NEWEST_FIRST') === v }, label)))
    const form = h(
      'form',
      {
        class: 'filters card',
        id: 'filters',
        onsubmit: (e) => {
          e.preventDefault()
          setHashParams('jobs', { type: type.value.trim(), status: status.value, userId: user.value.trim(), tag: tag.value.trim(), order: order.value })
        },
      },
      field('Type', type),
      field('Status', status),
      field('User', user),
      field('Tag', tag),
      field('Order', order),
      h('div', { class: 'field buttons' }, h('button', { type: 'submit' }, 'Filter'), h('a', { href: '#jobs', class: 'button secondary' }, 'Clear')),
    )
    // A change of a select applies at once; text fields on Enter or the button.
    status.addEventListener('change', () => form.requestSubmit())
    order.addEventListener('change', () => form.requestSubmit())
    const list = h('div')
    const pager = h('div', { class: 'pager' })
    root.append(h('h2', {}, 'Jobs'), form, list, pager)

    const pageNo = Math.max(1, Number.parseInt(p.get('page') ?? '1', 10) || 1)
    return async () => {
      const filter = {}
      if (p.get('type')) filter.type = p.get('type')
      if (p.get('status') && STATUSES.includes(p.get('status'))) filter.status = p.get('status')
      if (p.get('tag')) filter.tag = p.get('tag')
      if (p.get('userId') && /^\d{1,9}$/.test(p.get('userId'))) filter.userId = Number(p.get('userId'))
      const ord = ORDERS.some(([v]) => v === p.get('order')) ? p.get('order') : 'NEWEST_FIRST'
      const d = await gql(
        `query ($filter: JobFilter, $limit: Int, $offset: Int, $order: JobOrder) {
          jobs(filter: $filter, limit: $limit, offset: $offset, order: $order) { items { ${JOB_FIELDS} } total }
        }`,
        { filter, limit: PAGE_SIZE, offset: (pageNo - 1) * PAGE_SIZE, order: ord },
      )
      const { items, total } = d.jobs
      list.replaceChildren(
        table(
          ['id', 'type', 'status', 'user', 'due', 'attempt', 'tag'],
          items.map((j) => ({
            class: j.status === 'FAILED' ? 'failed-row' : undefined,
            cells: [jobLink(j.id), j.type, statusBadge(j.status), String(j.userId), when(j.due), `${j.attempt}/${j.maxAttempts ?? '∞'}`, j.tag ?? '—'],
          })),
          'jobs-table',
        ),
      )
      const first = total === 0 ? 0 : (pageNo - 1) * PAGE_SIZE + 1
      const last = Math.min(total, pageNo * PAGE_SIZE)
      const go = (n) => {
        const next = Object.fromEntries(p.entries())
        next.page = n
        setHashParams('jobs', next)
      }
      pager.replaceChildren(
        h('button', { type: 'button', disabled: pageNo <= 1, onclick: () => go(pageNo - 1) }, '‹ Previous'),
        h('span', { class: 'muted', id: 'page-info' }, `${first}–${last} of ${total}`),
        h('button', { type: 'button', disabled: last >= total, onclick: () => go(pageNo + 1) }, 'Next ›'),
      )
    }
  },

  job(root, r) {
    const body = h('div')
    const actions = h('div', { class: 'actions' })
    const message = h('p', { class: 'notice', role: 'status', hidden: true })
    root.append(h('p', {}, h('a', { href: '#jobs' }, '‹ Jobs')), h('h2', {}, `Job #${r.id}`), actions, message, body)

    async function act(mutation, label) {
      message.hidden = true
      try {
        const d = await gql(mutation, { id: r.id })
        message.textContent = label(d)
        message.className = 'notice'
      } catch (err) {
        message.textContent = err.message
        message.className = 'notice error'
      }
      message.hidden = false
      await refresh()
    }

    async function refresh() {
      const d = await gql(
        `query ($id: ID!) {
          jobChain(id: $id, limit: 50) {
            job { ${JOB_FIELDS} data result removeAt lockedBy leaseExpiresAt autoRescheduleOnFailure persistent }
            older { id status due finished attempt }
            newer { id status due finished attempt rescheduledFromJob }
            olderTruncated newerTruncated
          }
        }`,
        { id: r.id },
      )
      const chain = d.jobChain
      if (!chain) {
        actions.replaceChildren()
        body.replaceChildren(h('p', { class: 'muted' }, 'No such job (it may have been cleaned up).'))
        return
      }
      const j = chain.job
      const started = j.started ? new Date(j.started).getTime() : null
      const finished = j.finished ? new Date(j.finished).getTime() : null
      const error = errorOf(j.result)
      const buttons = []
      if (j.status === 'PENDING' || j.status === 'RUNNING')
        buttons.push(
          h(
            'button',
            {
              type: 'button',
              class: 'danger',
              id: 'cancel-job',
              onclick: () => act('mutation ($id: ID!) { cancelJob(id: $id) { status } }', (x) => `Cancel: ${x.cancelJob.status.toLowerCase()}`),
            },
            'Cancel',
          ),
        )
      if (finished !== null)
        buttons.push(
          h(
            'button',
            {
              type: 'button',
              id: 'rerun-job',
              onclick: () => act('mutation ($id: ID!) { rerunJob(id: $id) { id } }', (x) => `Rerun submitted as job #${x.rerunJob.id}`),
            },
            'Rerun',
          ),
        )
      actions.replaceChildren(...buttons)

      const facts = [
        ['status', statusBadge(j.status)],
        ['type', j.type],
        ['user', String(j.userId)],
        ['due', when(j.due)],
        ['started', when(j.started)],
        ['finished', when(j.finished)],
        ['duration', started !== null ? duration((finished ?? Date.now()) - started) + (finished === null ? ' (running)' : '') : '—'],
        ['attempt', `${j.attempt} of ${j.maxAttempts ?? '∞'}`],
        ['priority', String(j.priority)],
        ['tag', j.tag ?? '—'],
        ['cron', j.cronSchedule ?? '—'],
        ['retry on failure', j.autoRescheduleOnFailure ? 'yes' : 'no'],
        ['persistent', j.persistent ? 'yes' : 'no'],
        ['worker', j.lockedBy ?? '—'],
        ['cancelled', when(j.cancelledAt)],
        ['created', when(j.createdAt)],
        ['removed after', when(j.removeAt)],
      ]
      const chainRow = (c, rel) => ({
        class: c.id === j.id ? 'current' : c.status === 'FAILED' ? 'failed-row' : undefined,
        cells: [jobLink(c.id), rel, statusBadge(c.status), String(c.attempt), when(c.due), when(c.finished)],
      })
      const chainRows = [
        ...chain.older.map((c) => chainRow(c, 'older')),
        { class: 'current', cells: [h('strong', {}, `#${j.id}`), 'this job', statusBadge(j.status), String(j.attempt), when(j.due), when(j.finished)] },
        ...chain.newer.map((c) => chainRow(c, 'newer')),
      ]
      body.replaceChildren(
        error !== null ? h('section', { class: 'card error-box', id: 'job-error' }, h('h3', {}, 'Error'), h('pre', { class: 'error-text' }, error)) : '',
        j.lastError ? h('section', { class: 'card warn-box' }, h('h3', {}, 'Last interruption'), h('pre', {}, j.lastError)) : '',
        h('section', { class: 'card' }, h('dl', { class: 'facts' }, facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]))),
        h(
          'section',
          { class: 'card' },
          h('h3', {}, 'Chain (retries, cron runs, reruns)'),
          chain.olderTruncated ? h('p', { class: 'muted small' }, 'Older links exist that are not shown (cleaned up, or beyond 50).') : '',
          table(['job', 'link', 'status', 'attempt', 'due', 'finished'], chainRows, 'chain'),
          chain.newerTruncated ? h('p', { class: 'muted small' }, 'More newer links exist than the 50 shown.') : '',
        ),
        h('section', { class: 'card' }, h('h3', {}, 'Data'), jsonBlock(j.data)),
        h('section', { class: `card${j.status === 'FAILED' ? ' error-box' : ''}` }, h('h3', {}, 'Result'), jsonBlock(j.result, 'result')),
      )
    }
    return refresh
  },
}

/** The error text of a result ({ error } of a failed run), or null. */
function errorOf(result) {
  if (!result || typeof result !== 'object' || Array.isArray(result)) return null
  if (result.error === undefined) return null
  return typeof result.error === 'string' ? result.error : JSON.stringify(result.error)
}

/** Stacked bars, one per minute: succeeded below, failed (red) above. Inline SVG, no library. */
function minuteChart(buckets) {
  const W = 1000
  const H = 200
  const top = 10
  const bottom = 20
  const max = Math.max(1, ...buckets.map((b) => b.succeeded + b.failed))
  const bw = W / Math.max(1, buckets.length)
  const y = (n) => ((H - top - bottom) * n) / max
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': 'jobs finished per minute' })
  svg.append(s('line', { x1: 0, y1: H - bottom, x2: W, y2: H - bottom, class: 'axis' }))
  buckets.forEach((b, i) => {
    const x = i * bw + 1
    const hs = y(b.succeeded)
    const hf = y(b.failed)
    const g = s('g', {}, s('title', {}, `${when(b.minute)}: ${b.succeeded} succeeded, ${b.failed} failed`))
    if (hs > 0) g.append(s('rect', { x, y: H - bottom - hs, width: Math.max(1, bw - 2), height: hs, class: 'ok' }))
    if (hf > 0) g.append(s('rect', { x, y: H - bottom - hs - hf, width: Math.max(1, bw - 2), height: hf, class: 'fail' }))
    // An empty minute still has a hit area for its tooltip.
    g.append(s('rect', { x, y: top, width: Math.max(1, bw - 2), height: H - top - bottom, class: 'hit' }))
    svg.append(g)
  })
  svg.append(s('text', { x: 2, y: top + 2, class: 'label' }, `${max}/min`))
  svg.append(s('text', { x: 2, y: H - 4, class: 'label' }, '60 min ago'))
  svg.append(s('text', { x: W - 2, y: H - 4, class: 'label end' }, 'now'))
  const sum = buckets.reduce((a, b) => [a[0] + b.succeeded, a[1] + b.failed], [0, 0])
  return h(
    'div',
    {},
    svg,
    h('p', { class: 'small legend' }, h('span', { class: 'key ok' }), ` ${sum[0]} succeeded `, h('span', { class: 'key fail' }), ` ${sum[1]} failed in the last hour`),
  )
}

// ---------------------------------------------------------------------------------------------------------
// The app: mount the view of the hash, refresh it every REFRESH_MS while the tab is visible.

function startApp() {
  const root = document.getElementById('view')
  const status = document.getElementById('status')
  const appError = document.getElementById('app-error')
  let refresh = null
  let timer = null
  let generation = 0

  async function run(gen) {
    if (!refresh) return
    try {
      await refresh()
      if (gen !== generation) return
      appError.hidden = true
      status.textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every ${REFRESH_MS / 1000} s`
    } catch (err) {
      if (gen !== generation) return
      appError.textContent = `Could not load: ${err.message}`
      appError.hidden = false
    }
  }

  function mount() {
    generation++
    const r = route()
    root.replaceChildren()
    for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.view === (r.view === 'job' ? 'jobs' : r.view))
    refresh = views[r.view](root, r)
    clearInterval(timer)
    const gen = generation
    timer = setInterval(() => {
      if (!document.hidden) void run(gen)
    }, REFRESH_MS)
    void run(gen)
  }

  window.addEventListener('hashchange', mount)
  mount()
}

// ---------------------------------------------------------------------------------------------------------
// The login page's wallet button: SIWE through the same GraphQL API, then the session token is exchanged
// for the dashboard's cookie at /dashboard/login.

function startLogin() {
  const button = document.getElementById('wallet-login')
  const error = document.getElementById('login-error')
  const show = (text) => {
    error.textContent = text
    error.hidden = false
  }
  button?.addEventListener('click', async () => {
    const eth = window.ethereum
    if (!eth?.request) return show('No wallet found in this browser: sign in with the admin API token instead.')
    button.disabled = true
    try {
      const [address] = await eth.request({ method: 'eth_requestAccounts' })
      if (!address) throw new Error('the wallet shared no account')
      const gen = await gql('mutation ($address: String!) { generateSiweMessage(address: $address) }', { address }, { anonymous: true })
      const message = gen.generateSiweMessage
      const hex = `0x${[...new TextEncoder().encode(message)].map((b) => b.toString(16).padStart(2, '0')).join('')}`
      const signature = await eth.request({ method: 'personal_sign', params: [hex, address] })
      const auth = await gql(
        'mutation ($message: String!, $signature: String!) { authenticateWithSiwe(message: $message, signature: $signature) { token } }',
        { message, signature },
        { anonymous: true },
      )
      const res = await fetch('/dashboard/login', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ sessionToken: auth.authenticateWithSiwe.token }),
        credentials: 'same-origin',
      })
      if (!res.ok) {
        const body = await res.json().catch(() => null)
        throw new Error(body?.errors?.[0]?.message ?? `HTTP ${res.status}`)
      }
      window.location.assign('/dashboard')
    } catch (err) {
      show(`Wallet sign-in failed: ${err.message}`)
    } finally {
      button.disabled = false
    }
  })
}

if (document.getElementById('view')) startApp()
else startLogin()
