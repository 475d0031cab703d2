import { type Caller, createCallerResolver } from '../auth/callers'
import { createDashboardSessions } from '../auth/dashboardSession'
import { AccessError } from '../auth/errors'
import { resolveSessionSecret } from '../auth/secret'
import { createSessions } from '../auth/session'
import { createSiwe } from '../auth/siwe'
import { createJobActions } from '../auth/jobActions'
import { createSubmitPolicy } from '../auth/submitPolicy'
import { createLiveHub } from '../live/hub'
import type { ServerApp } from '../serverApp'

/**
 * What every resolver receives: who is calling, decided once per request from its Authorization header
 * (or, for the dashboard, its session cookie with the CSRF header).
 */
export interface GqlContext {
  caller: Caller
  request: Request
  /**
   * What this request has used so far, across all its fields: aliases must not multiply a per-request
   * limit (15 aliased lists of 100 rows, or 15 aliased batches of SUBMIT_BATCH_MAX jobs).
   */
  spent: { rows: number; jobs: number; signIns: number }
}

/** The sign-in and access machinery of one server, built once (the session secret is read here). */
export function createAccess(serverApp: ServerApp) {
  const { config } = serverApp
  const issuer = () => serverApp.baseUrl().origin
  const live = createLiveHub({ sql: serverApp.dbHandle.client, db: serverApp.db, log: serverApp.log.child({ component: 'live' }) })
  const secret = resolveSessionSecret(config, serverApp.log)
  const sessions = createSessions({ secret, ttlMs: config.SESSION_TTL_MS, issuer })
  const dashboard = createDashboardSessions({ secret, ttlMs: config.DASHBOARD_SESSION_TTL_MS, issuer })
  // Through serverApp at call time: boot replaces workerManager with the running manager after this is built.
  const submitPolicy = createSubmitPolicy({
    db: serverApp.db,
    registry: serverApp.registry,
    submitter: {
      submitJob: (input, opts) => serverApp.workerManager.submitJob(input, opts),
      submitJobs: (inputs, opts) => serverApp.workerManager.submitJobs(inputs, opts),
    },
    config,
  })
  return {
    sessions,
    live,
    submitPolicy,
    jobActions: createJobActions({ db: serverApp.db, registry: serverApp.registry, submitPolicy }),
    dashboard,
    callerOf: createCallerResolver({ sessions, adminWallets: config.ADMIN_WALLETS, apiToken: config.ADMIN_API_TOKEN, dashboard }),
    siwe: createSiwe({
      db: serverApp.db,
      baseUrl: () => serverApp.baseUrl(),
      // CHAIN_ID, or the node's: without either, nobody can sign in (say so rather than "Unexpected error").
      chainId: () =>
        serverApp.chain.getChainId().catch(() => {
          throw new AccessError('UNAVAILABLE', 'sign-in is unavailable: the chain node does not answer (set CHAIN_ID to sign in without it)')
        }),
      publicClient: () => serverApp.chain.publicClient,
      nonceTtlMs: config.SIWE_NONCE_TTL_MS,
    }),
    isAdminWallet: (address: string) => config.ADMIN_WALLETS.includes(address.toLowerCase()),
    /** Ends the live subscriptions and releases their LISTEN connection (before the pool closes). */
    close: () => live.close(),
  }
}

export type Access = ReturnType<typeof createAccess>
