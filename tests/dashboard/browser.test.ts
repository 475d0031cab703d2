import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import postgres from 'postgres'
import type { Browser, BrowserContext, Page } from 'playwright-core'
import { type PrivateKeyAccount, privateKeyToAccount } from 'viem/accounts'
import { ANVIL_KEYS } from '../helpers/anvil'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type ServerProcess, startServerProcess, TEST_ENV } from '../helpers/server'
import { waitFor } from '../helpers/wait'

/**
 * The dashboard in a real browser (the system's chromium, driven by playwright-core) against the real
 * server: sign in through the form, read the seeded jobs, filter, open a failed job, cancel and rerun,
 * and the page at a desktop and a phone size (screenshots in test-artifacts/).
 */

const CHROMIUM = '/usr/bin/chromium'
const ARTIFACTS = join(import.meta.dir, '..', '..', 'test-artifacts')
const haveChromium = existsSync(CHROMIUM)
if (!haveChromium) {
  // CI installs chromium (.ci/run): there a missing browser is a failure, not a skip.
  if (process.env.CI === 'true') {
    test('chromium is installed', () => {
      throw new Error(`${CHROMIUM} is missing: the dashboard's browser test needs it (apt-get install -y chromium)`)
    })
  } else console.log(`tests/dashboard/browser.test.ts: skipped, ${CHROMIUM} is not installed (apt-get install -y chromium); CI fails instead`)
}

// The error text is markup on purpose: the page must show it as text, never run it.
const XSS = `<img src=x onerror="window.__xss=1"><script>window.__xss=2</script> boom: the disk is full`

let db: TestDatabase
let server: ServerProcess
let sql: postgres.Sql
let browser: Browser
const ids: Record<'failed' | 'pending' | 'succeeded' | 'retry', number> = { failed: 0, pending: 0, succeeded: 0, retry: 0 }
const cspErrors: string[] = []
// Two wallets for the SIWE button: the first is in ADMIN_WALLETS, the second is a plain user.
const adminWallet = privateKeyToAccount(ANVIL_KEYS[3])
const userWallet = privateKeyToAccount(ANVIL_KEYS[4])

describe.skipIf(!haveChromium)('the dashboard in a browser', () => {
  beforeAll(
    async () => {
      mkdirSync(ARTIFACTS, { recursive: true })
      db = await createTestDatabase('dashboard_browser')
      server = await startServerProcess({ DATABASE_URL: db.url, WORKER_COUNT: '1', CRON_REMOVE_OLD_WORKER_JOBS: 'off', ADMIN_WALLETS: adminWallet.address })
      sql = postgres(db.url, { max: 2, onnotice: () => {} })
      // Seeded straight into the table: finished ones over the last minutes, for the chart too.
      const [failed] = await sql`INSERT INTO worker_jobs (type, user_id, data, started, finished, success, result, tag)
        VALUES ('fail', 7, ${sql.json({ path: '/var/data', note: '<b>not bold</b>' })}, now() - interval '3 minutes 2 seconds', now() - interval '3 minutes', false,
                ${sql.json({ error: XSS, name: 'Error' })}, 'nightly') RETURNING id`
      const [retry] = await sql`INSERT INTO worker_jobs (type, user_id, due, rescheduled_from_job, attempt, tag)
        VALUES ('fail', 7, now() + interval '1 day', ${failed!.id}, 2, 'nightly') RETURNING id`
      const [pending] = await sql`INSERT INTO worker_jobs (type, user_id, due, data) VALUES ('noop', 7, now() + interval '2 days', '{"later":true}') RETURNING id`
      const [succeeded] = await sql`INSERT INTO worker_jobs (type, user_id, data, started, finished, success, result)
        VALUES ('noop', 0, '{"n":1}', now() - interval '10 minutes 1 second', now() - interval '10 minutes', true, '{"ok":true}') RETURNING id`
      await sql`INSERT INTO worker_jobs (type, user_id, started, finished, success, result)
        SELECT 'noop', 0, now() - make_interval(mins => i), now() - make_interval(mins => i), i % 7 <> 0, '{}' FROM generate_series(1, 50) AS i`
      Object.assign(ids, { failed: Number(failed!.id), retry: Number(retry!.id), pending: Number(pending!.id), succeeded: Number(succeeded!.id) })
      const { chromium } = await import('playwright-core')
      browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'], timeout: 30_000 })
    },
    { timeout: 60_000 },
  )

  afterAll(async () => {
    await browser?.close()
    await server?.stop()
    await sql?.end()
    await db?.drop()
  })

  async function signedInPage(viewport: { width: number; height: number }): Promise<{ context: BrowserContext; page: Page }> {
    const context = await browser.newContext({ viewport })
    const page = await context.newPage()
    page.setDefaultTimeout(15_000)
    page.on('console', (m) => {
      if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) cspErrors.push(m.text())
    })
    await page.goto(`${server.url}/dashboard`)
    await page.fill('#token', TEST_ENV.ADMIN_API_TOKEN)
    await Promise.all([page.waitForURL(`${server.url}/dashboard`), page.click('#login-form button[type=submit]')])
    await page.waitForSelector('#view .tile')
    return { context, page }
  }

  const noHorizontalScroll = (page: Page) => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)

  /**
   * A browser with a wallet extension, as far as the page can tell: an EIP-1193 `window.ethereum` whose
   * personal_sign is answered by a real secp256k1 key in the test process (exposeFunction), so the page's
   * own SIWE flow runs end to end: GraphQL message, signature, session token, dashboard cookie.
   */
  async function withWallet(account: PrivateKeyAccount): Promise<{ context: BrowserContext; page: Page; signed: string[] }> {
    const context = await browser.newContext()
    const signed: string[] = []
    await context.exposeFunction('__testWalletSign', async (hex: `0x${string}`) => {
      signed.push(Buffer.from(hex.slice(2), 'hex').toString('utf8'))
      return account.signMessage({ message: { raw: hex } })
    })
    await context.addInitScript((address: string) => {
      ;(window as any).ethereum = {
        async request({ method, params }: { method: string; params?: unknown[] }) {
          if (method === 'eth_requestAccounts' || method === 'eth_accounts') return [address]
          if (method === 'personal_sign') return (window as any).__testWalletSign(params![0])
          throw new Error(`unsupported method ${method}`)
        },
      }
    }, account.address)
    const page = await context.newPage()
    page.setDefaultTimeout(15_000)
    await page.goto(`${server.url}/dashboard`)
    return { context, page, signed }
  }

  test('wallet sign-in: an admin wallet gets the dashboard through SIWE; a non-admin wallet is refused and gets no session', async () => {
    const admin = await withWallet(adminWallet)
    await Promise.all([admin.page.waitForURL(`${server.url}/dashboard`), admin.page.click('#wallet-login')])
    await admin.page.waitForSelector('#view .tile')
    // The wallet signed one SIWE message, for this server and this address.
    expect(admin.signed).toHaveLength(1)
    expect(admin.signed[0]).toContain(new URL(server.url).host)
    expect(admin.signed[0]).toContain(adminWallet.address)
    const cookies = await admin.context.cookies()
    expect(cookies.some((c) => c.httpOnly && c.sameSite === 'Strict')).toBe(true)
    await admin.context.close()

    const user = await withWallet(userWallet)
    await user.page.click('#wallet-login')
    await user.page.waitForSelector('#login-error:not([hidden])')
    expect(await user.page.textContent('#login-error')).toContain('Wallet sign-in failed')
    expect(await user.page.$('#view')).toBeNull()
    expect(await user.context.cookies()).toEqual([])
    await user.context.close()
  })

  test('a wrong token shows the reason on the form', async () => {
    const context = await browser.newContext()
    const page = await context.newPage()
    page.setDefaultTimeout(15_000)
    await page.goto(`${server.url}/dashboard`)
    await page.fill('#token', 'wrong-token')
    await Promise.all([page.waitForURL(/login=refused/), page.click('#login-form button[type=submit]')])
    expect(await page.textContent('#login-error')).toContain('not valid')
    // And without a session, the page's data is a 401 (the login form is what shows).
    const status = await page.evaluate(async () => {
      const res = await fetch('/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-csrf-token': 'none' },
        body: JSON.stringify({ query: '{ workerStatus { counts { count } } }' }),
      })
      return res.status
    })
    expect(status).toBe(401)
    await context.close()
  })

  test('desktop: overview, filter, a failed job with its error, cancel, rerun', async () => {
    const { context, page } = await signedInPage({ width: 1280, height: 800 })
    // Overview: the counts and the chart.
    await page.waitForSelector('.tile.failed.alert')
    expect(await page.textContent('.tile.failed .tile-n')).not.toBe('0')
    expect(await page.locator('svg.chart rect.fail').count()).toBeGreaterThan(0)
    await page.screenshot({ path: join(ARTIFACTS, 'overview-1280x800.png'), fullPage: true })
    expect(await noHorizontalScroll(page)).toBe(true)

    // Workers: this server's child.
    await page.click('nav a[data-view=workers]')
    await page.waitForSelector('text=running jobs')
    await waitFor(async () => (await page.locator('#view td[data-label=alive]').allTextContents()).includes('alive'), { timeoutMs: 15_000, what: 'a live worker' })

    // Jobs: every seeded one, then filtered by status; the filter is in the URL and survives the refresh.
    await page.click('nav a[data-view=jobs]')
    await page.waitForSelector('#page-info')
    await page.selectOption('select[name=status]', 'FAILED')
    await page.waitForURL(/#jobs\?.*status=FAILED/)
    await waitFor(async () => {
      const badges = await page.locator('.jobs-table .badge').allTextContents()
      return badges.length > 0 && badges.every((b) => b === 'FAILED')
    }, { what: 'only failed jobs listed' })
    const before = await page.textContent('#status')
    await waitFor(async () => (await page.textContent('#status')) !== before, { timeoutMs: 15_000, what: 'the list to refresh itself' })
    expect(await page.inputValue('select[name=status]')).toBe('FAILED')
    expect(page.url()).toContain('status=FAILED')

    // The failed job: its error, as text.
    await page.click(`a[href="#job/${ids.failed}"]`)
    await page.waitForSelector('#job-error')
    expect(await page.textContent('#job-error pre')).toBe(XSS)
    expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined()
    expect(await page.locator('#view img').count()).toBe(0)
    expect(await page.textContent('#view')).toContain('<b>not bold</b>')
    // Its chain: the retry that follows it.
    expect(await page.locator(`table.chain a[href="#job/${ids.retry}"]`).count()).toBe(1)
    await page.screenshot({ path: join(ARTIFACTS, 'job-1280x800.png'), fullPage: true })
    expect(await noHorizontalScroll(page)).toBe(true)

    // Cancel a pending job: the row changes in the database.
    await page.goto(`${server.url}/dashboard#job/${ids.pending}`)
    await page.click('#cancel-job')
    await waitFor(async () => (await sql`SELECT cancelled_at FROM worker_jobs WHERE id = ${ids.pending}`)[0]!.cancelled_at !== null, { what: 'the cancel' })
    await page.waitForSelector('.actions #rerun-job')
    expect(await page.textContent('dd .badge')).toBe('CANCELLED')

    // Rerun a finished job: a new row that follows it.
    await page.goto(`${server.url}/dashboard#job/${ids.succeeded}`)
    await page.click('#rerun-job')
    const [rerun] = await waitFor(async () => {
      const rows = await sql`SELECT id FROM worker_jobs WHERE rescheduled_from_job = ${ids.succeeded}`
      return rows.length > 0 ? rows : null
    }, { what: 'the rerun row' })
    await page.waitForSelector(`.notice:has-text("#${rerun!.id}")`)
    await page.waitForSelector(`table.chain a[href="#job/${rerun!.id}"]`)

    // Sign out: the form again, and the data is a 401 once more.
    await Promise.all([page.waitForURL(`${server.url}/dashboard`), page.click('.logout button')])
    await page.waitForSelector('#login-form')
    expect((await context.cookies()).filter((c) => c.name === 'dashboard_session')).toEqual([])
    expect(cspErrors).toEqual([])
    await context.close()
  }, 60_000)

  test('phone: readable, no horizontal scroll', async () => {
    const { context, page } = await signedInPage({ width: 390, height: 844 })
    await page.waitForSelector('svg.chart')
    await page.screenshot({ path: join(ARTIFACTS, 'overview-390x844.png'), fullPage: true })
    expect(await noHorizontalScroll(page)).toBe(true)
    await page.goto(`${server.url}/dashboard#job/${ids.failed}`)
    await page.waitForSelector('#job-error')
    await page.screenshot({ path: join(ARTIFACTS, 'job-390x844.png'), fullPage: true })
    expect(await noHorizontalScroll(page)).toBe(true)
    await page.goto(`${server.url}/dashboard#jobs`)
    await page.waitForSelector('.jobs-table td[data-label=type]')
    expect(await noHorizontalScroll(page)).toBe(true)
    // Tables stack into cards: no header row shown.
    expect(await page.locator('.jobs-table thead').isVisible()).toBe(false)
    expect(cspErrors).toEqual([])
    await context.close()
  }, 60_000)
})
