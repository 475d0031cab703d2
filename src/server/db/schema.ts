import { sql } from 'drizzle-orm'
import { CLAIMABLE_TEXT, FINISHED_TEXT, LIMITED_PENDING_TEXT, PENDING_TEXT, RUNNING_TEXT, SIGNED_IN_USER_TEXT } from '../workers/queue/states'
import {
  bigint,
  boolean,
  check,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  smallint,
  text,
  timestamp,
  uniqueIndex,
} from 'drizzle-orm/pg-core'

const tstz = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' })

/**
 * The job queue. Column meanings and units are documented in the README ("The worker_jobs table").
 * Delays are in seconds, as the spec says. Its states (pending, running, finished) are defined once, in
 * workers/queue/states.ts; the partial indexes below use those predicates.
 */
export const workerJobs = pgTable(
  'worker_jobs',
  {
    // bigint: a busy queue can pass 2^31 ids; 'number' mode is exact up to 2^53.
    id: bigint('id', { mode: 'number' }).primaryKey().generatedByDefaultAsIdentity(),
    type: text('type').notNull(),
    userId: integer('user_id').notNull().default(0),
    data: jsonb('data').notNull().default({}),
    due: tstz('due').notNull().defaultNow(),
    // Lower runs first (as graphile-worker and Oban); 0 for a row inserted without it. The built-in
    // jobs run at BUILT_IN_PRIORITY (negative), so no user backlog delays them beyond one claim.
    priority: smallint('priority').notNull().default(0),
    // Set for the types with a concurrency limit (queue/limits.ts): the job's key, or '' when the type
    // has only a type-wide limit. NULL for every other type. It decides which claim index holds the row.
    concurrencyKey: text('concurrency_key'),
    started: tstz('started'),
    finished: tstz('finished'),
    removeAt: tstz('remove_at'),
    success: boolean('success'),
    result: jsonb('result'),
    cronSchedule: text('cron_schedule'),
    autoRescheduleOnFailure: boolean('auto_reschedule_on_failure').notNull().default(false),
    autoRescheduleOnFailureDelay: integer('auto_reschedule_on_failure_delay').notNull().default(0),
    removeDelay: integer('remove_delay').notNull().default(604_800),
    persistent: boolean('persistent').notNull().default(false),
    tag: text('tag'),
    attempt: integer('attempt').notNull().default(1),
    // Every job is bounded: retries and interruptions stop at max_attempts (default 25).
    maxAttempts: integer('max_attempts').notNull().default(25),
    rescheduledFromJob: bigint('rescheduled_from_job', { mode: 'number' }),
    lockedBy: text('locked_by'),
    // Why the last attempt of a row that went back to pending ended (interrupted by a crash, a lost lease,
    // a shutdown); the row's history in one column, since an interrupted job keeps its id.
    lastError: text('last_error'),
    leaseExpiresAt: tstz('lease_expires_at'),
    // When the job was cancelled (cancelJob, or replaced by a newer job with its tag). On a running row it
    // is a request: the holder's handler sees its signal abort, and the outcome is recorded as cancelled.
    cancelledAt: tstz('cancelled_at'),
    createdAt: tstz('created_at').notNull().defaultNow(),
    updatedAt: tstz('updated_at').notNull().defaultNow(),
  },
  (t) => [
    // The claim scans this index in (priority, due, id) order, exactly its ORDER BY, and stops after the
    // rows it takes, so its cost does not grow with the number of finished rows kept for inspection.
    // Rows of limited types (concurrency_key set) are not in it: the claim would walk past every one held
    // back by its limit. They have their own index, which the limited claim walks key by key.
    index('worker_jobs_claim_idx').on(t.priority, t.due, t.id).where(sql.raw(CLAIMABLE_TEXT)),
    index('worker_jobs_limited_idx')
      .on(t.type, t.concurrencyKey, t.priority, t.due, t.id)
      .where(sql.raw(LIMITED_PENDING_TEXT)),
    // The most urgent due row of each limited type, whatever its key (queue/heads.ts): the worker loop
    // compares it with the common claim's head to decide which claim gets the free slots first.
    index('worker_jobs_limited_head_idx').on(t.type, t.priority, t.due, t.id).where(sql.raw(LIMITED_PENDING_TEXT)),
    // At most one pending job per tag and user: a user's tags are that user's own (built-in schedules use
    // user 0 and the reserved `system:` prefix, which submitJob refuses).
    uniqueIndex('worker_jobs_pending_tag_uidx')
      .on(t.userId, t.tag)
      .where(sql.raw(`tag IS NOT NULL AND ${PENDING_TEXT}`)),
    // The rescuer looks for running rows whose lease has expired.
    index('worker_jobs_running_lease_idx').on(t.leaseExpiresAt).where(sql.raw(RUNNING_TEXT)),
    // Cleanup deletes finished, non-persistent rows by remove_at.
    index('worker_jobs_remove_at_idx').on(t.removeAt).where(sql.raw(`${FINISHED_TEXT} AND persistent = false`)),
    // The jobs(filter) API lists newest first by type, by user or by tag without walking the table
    // (graphql/jobQueries.ts reads each state through its own index). Partial on purpose: every update of
    // a job row writes a new entry into every index whose predicate the new version meets, and a job row
    // is written three times (insert, claim, finish). Full indexes on type and user added six entries per
    // job and halved the throughput; these add one each (finished rows at the finish, pending rows at the
    // insert). Running rows are few (the running-lease index finds them).
    index('worker_jobs_finished_type_idx').on(t.type, t.id).where(sql.raw(FINISHED_TEXT)),
    index('worker_jobs_finished_user_idx').on(t.userId, t.id).where(sql.raw(FINISHED_TEXT)),
    // A signed-in user's pending jobs: their list, and MAX_PENDING_JOBS_PER_USER's count at each submit.
    // `user_id <> 0` keeps the claim off it: with the same predicate as the claim index, the planner
    // took this one for the claim (and sorted every pending row) whenever its statistics saw few
    // pending rows, which cut the claim rate by half. The system's rows (user 0) are not in it at all.
    // Queries that use it must say `user_id <> 0` too (a bound user id proves nothing in a generic plan).
    index('worker_jobs_pending_user_idx').on(t.userId, t.id).where(sql.raw(`${PENDING_TEXT} AND ${SIGNED_IN_USER_TEXT}`)),
    index('worker_jobs_tag_idx').on(t.tag, t.id).where(sql`tag IS NOT NULL`),
    // finishedPerMinute (the dashboard's chart) counts the outcomes of the last hour: a range scan of this
    // index, and with `success` in it an index-only one, so it reads the last hour's rows and no others.
    // One entry per job, written by the finish; cancelled rows are not outcomes and stay out.
    index('worker_jobs_finished_at_idx').on(t.finished, t.success).where(sql.raw(`${FINISHED_TEXT} AND cancelled_at IS NULL`)),
    // The chain of a job (jobChain) walks rescheduled_from_job both ways: older links by primary key,
    // newer ones (a retry, a cron successor, a rerun) through this. Only rows that follow another have an entry.
    index('worker_jobs_rescheduled_from_idx').on(t.rescheduledFromJob).where(sql`rescheduled_from_job IS NOT NULL`),
  ],
)

export type WorkerJob = typeof workerJobs.$inferSelect

/**
 * The servers sharing this database, each refreshed by its manager: which job types it can run (a job
 * that no live server registers stays pending and is reported; see workers/queue/unrunnable.ts).
 */
export const workerServers = pgTable('worker_servers', {
  id: text('id').primaryKey(),
  hostname: text('hostname').notNull(),
  pid: integer('pid').notNull(),
  jobTypes: text('job_types').array().notNull(),
  // The types it registers with a concurrency limit: the insert trigger gives a row of one of these
  // written without concurrency_key (by psql, a script) the key '<unkeyed>' (UNKEYED, queue/limits.ts).
  limitedTypes: text('limited_types').array().notNull().default(sql`'{}'::text[]`),
  // Its children as its /health shows them, refreshed with last_seen_at: workerStatus reads every server's.
  workers: jsonb('workers').notNull().default([]),
  startedAt: tstz('started_at').notNull().defaultNow(),
  lastSeenAt: tstz('last_seen_at').notNull().defaultNow(),
})

/**
 * The starts of rate-limited job types (queue/limits.ts), one row per claimed job, kept for the longest
 * window of its type: a claim counts the rows inside the window. Written and read only under the type's
 * advisory lock; `at` is the claim's clock after it took that lock.
 */
export const workerRateStarts = pgTable(
  'worker_rate_starts',
  {
    type: text('type').notNull(),
    // The job's concurrency_key ('' for a type without a key).
    key: text('key').notNull(),
    at: tstz('at').notNull(),
  },
  (t) => [index('worker_rate_starts_idx').on(t.type, t.key, t.at)],
)

export const users = pgTable(
  'users',
  {
    id: integer('id').primaryKey().generatedByDefaultAsIdentity(),
    // Always stored lower-case so lookups by address need no function index.
    walletAddress: text('wallet_address').notNull().unique(),
    createdAt: tstz('created_at').notNull().defaultNow(),
  },
  (t) => [check('users_wallet_address_lower', sql`${t.walletAddress} = lower(${t.walletAddress})`)],
)

/**
 * Sign-in nonces (SIWE): each is issued for one address, used once (deleted when a sign-in consumes it)
 * and expires. Expired rows are swept when new ones are issued.
 */
export const authNonces = pgTable(
  'auth_nonces',
  {
    nonce: text('nonce').primaryKey(),
    // Lower-case, as users.wallet_address.
    address: text('address').notNull(),
    expiresAt: tstz('expires_at').notNull(),
    createdAt: tstz('created_at').notNull().defaultNow(),
  },
  (t) => [index('auth_nonces_address_idx').on(t.address), index('auth_nonces_expires_idx').on(t.expiresAt)],
)

/** watchChain's durable position: the last block fully processed on a chain, with its hash for reorg checks. */
export const chainCursors = pgTable('chain_cursors', {
  chainId: integer('chain_id').primaryKey(),
  blockNumber: bigint('block_number', { mode: 'bigint' }).notNull(),
  blockHash: text('block_hash').notNull(),
  updatedAt: tstz('updated_at').notNull().defaultNow(),
  // Set when watchChain stopped this chain rather than skip blocks (a reorg deeper than the remembered
  // window, or a cursor block the chain no longer has); every later run fails with halted_reason until
  // an operator repairs the cursor and clears both (docs/chain-jobs.md).
  haltedAt: tstz('halted_at'),
  haltedReason: text('halted_reason'),
})

/** Hashes of recently processed blocks, so a reorg can be traced back to the last block that still agrees. */
export const chainBlocks = pgTable(
  'chain_blocks',
  {
    chainId: integer('chain_id').notNull(),
    blockNumber: bigint('block_number', { mode: 'bigint' }).notNull(),
    blockHash: text('block_hash').notNull(),
  },
  (t) => [primaryKey({ columns: [t.chainId, t.blockNumber] })],
)

/** The ledger of processed chain events: a log is processed at most once per (chain, block hash, log index). */
export const chainEvents = pgTable(
  'chain_events',
  {
    id: integer('id').primaryKey().generatedByDefaultAsIdentity(),
    chainId: integer('chain_id').notNull(),
    blockNumber: bigint('block_number', { mode: 'bigint' }).notNull(),
    blockHash: text('block_hash').notNull(),
    logIndex: integer('log_index').notNull(),
    txHash: text('tx_hash').notNull(),
    address: text('address').notNull(),
    createdAt: tstz('created_at').notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('chain_events_block_log_uidx').on(t.chainId, t.blockHash, t.logIndex),
    index('chain_events_block_idx').on(t.chainId, t.blockNumber),
  ],
)

export const notifications = pgTable(
  'notifications',
  {
    id: integer('id').primaryKey().generatedByDefaultAsIdentity(),
    userId: integer('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    // Derived from a ledger row: a reorg that deletes the event deletes the notification with it.
    chainEventId: integer('chain_event_id').references(() => chainEvents.id, { onDelete: 'cascade' }),
    data: jsonb('data').notNull(),
    read: boolean('read').notNull().default(false),
    createdAt: tstz('created_at').notNull().defaultNow(),
  },
  (t) => [
    index('notifications_user_idx').on(t.userId, t.createdAt),
    // A reorg's ledger delete cascades here, and the ledger prune asks which ledger rows are still referenced.
    index('notifications_chain_event_idx').on(t.chainEventId).where(sql`chain_event_id IS NOT NULL`),
  ],
)

/**
 * Transactions the server wallet signed for a chain job, written (and committed) before they are
 * broadcast, so that a run after a crash, a restart or a timeout finds what is in flight instead of
 * sending it again. Replacements of a stuck transaction are rows with the same nonce; at most one of
 * them can ever be mined. `settled_at` is set on every row of a nonce once that nonce is used on chain.
 * Today's only purpose: 'multicall3DeployerFunding' (deployMulticall3's top-up of the keyless deployer).
 */
export const chainSentTxs = pgTable(
  'chain_sent_txs',
  {
    id: integer('id').primaryKey().generatedByDefaultAsIdentity(),
    chainId: integer('chain_id').notNull(),
    purpose: text('purpose').notNull(),
    // Lower-case addresses.
    fromAddress: text('from_address').notNull(),
    toAddress: text('to_address').notNull(),
    nonce: integer('nonce').notNull(),
    // Wei, as decimal strings (they exceed 2^63).
    value: text('value').notNull(),
    maxFeePerGas: text('max_fee_per_gas').notNull(),
    maxPriorityFeePerGas: text('max_priority_fee_per_gas').notNull(),
    txHash: text('tx_hash').notNull().unique(),
    rawTx: text('raw_tx').notNull(),
    settledAt: tstz('settled_at'),
    createdAt: tstz('created_at').notNull().defaultNow(),
    // The logical send (chain_sends) this signed attempt belongs to; null only for rows written before the sender.
    sendId: integer('send_id').references(() => chainSends.id, { onDelete: 'cascade' }),
    // A zero-value self-transfer signed to fill the send's nonce when its own transaction could not be sent.
    filler: boolean('filler').notNull().default(false),
  },
  // The in-flight rows of a chain and purpose: what every deployMulticall3 run looks up first.
  (t) => [
    index('chain_sent_txs_open_idx').on(t.chainId, t.purpose, t.id).where(sql`settled_at IS NULL`),
    index('chain_sent_txs_send_idx').on(t.sendId, t.id),
  ],
)

/**
 * One logical transaction of a job step (src/server/chain/sender): its key is unique per chain and wallet,
 * so a rerun of the same step finds it instead of signing another, and its nonce is unique per chain and
 * wallet, so no two steps ever share one. Its signed attempts (the first, fee-bumped replacements, a filler)
 * are rows of chain_sent_txs. state: 'pending' until the nonce is used on chain, then 'mined' (tx_hash is
 * the attempt that was mined) or 'superseded' (a filler or a transaction from outside took the nonce, so the
 * step's own transaction can never be mined).
 */
export const chainSends = pgTable(
  'chain_sends',
  {
    id: integer('id').primaryKey().generatedByDefaultAsIdentity(),
    chainId: integer('chain_id').notNull(),
    // Lower-case address of the signing wallet.
    wallet: text('wallet').notNull(),
    sendKey: text('send_key').notNull(),
    jobId: bigint('job_id', { mode: 'number' }),
    stepKey: text('step_key').notNull(),
    nonce: integer('nonce').notNull(),
    toAddress: text('to_address').notNull(),
    value: text('value').notNull(),
    data: text('data').notNull().default('0x'),
    gas: text('gas').notNull(),
    state: text('state').notNull().default('pending'),
    txHash: text('tx_hash'),
    createdAt: tstz('created_at').notNull().defaultNow(),
    settledAt: tstz('settled_at'),
  },
  (t) => [
    uniqueIndex('chain_sends_key_uq').on(t.chainId, t.wallet, t.sendKey),
    // The database, not a lock in some process, is what makes a nonce impossible to hand out twice.
    uniqueIndex('chain_sends_nonce_uq').on(t.chainId, t.wallet, t.nonce),
    index('chain_sends_pending_idx').on(t.chainId, t.wallet, t.nonce).where(sql`state = 'pending'`),
    check('chain_sends_state_check', sql`${t.state} IN ('pending', 'mined', 'superseded')`),
  ],
)

/**
 * The per-wallet, per-chain nonce counter: the next nonce to hand out. Its row is locked (FOR UPDATE) by
 * every allocation, which serialises allocations for one wallet across every worker and server; it is
 * reconciled with the chain's pending nonce and the open sends at each allocation (sender/nonces.ts).
 */
export const chainNonces = pgTable(
  'chain_nonces',
  {
    chainId: integer('chain_id').notNull(),
    wallet: text('wallet').notNull(),
    nextNonce: integer('next_nonce').notNull(),
    updatedAt: tstz('updated_at').notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.chainId, t.wallet] })],
)
