/**
 * The GraphQL SDL. WorkerJob mirrors the worker_jobs table column for column (camelCase); delays are in
 * seconds, as in the table. SubmitJobInput mirrors the fields of workerManager.submitJob, whose zod schema
 * is the one place inputs are validated (GraphQL only checks the shapes it can express). Who may call
 * what is decided in the resolvers (src/server/auth); it is noted on each field here.
 */
export const typeDefs = /* GraphQL */ `
  "Any JSON value (object, array, string, number, boolean or null)."
  scalar JSON

  "An ISO 8601 date-time string with a time zone, e.g. 2030-01-01T00:00:00.000Z."
  scalar DateTime

  "Derived from the row: started/finished/success/cancelledAt."
  enum JobStatus {
    PENDING
    RUNNING
    SUCCEEDED
    FAILED
    "Cancelled by cancelJob, or replaced by a newer job with the same tag."
    CANCELLED
  }

  type WorkerJob {
    id: ID!
    type: String!
    userId: Int!
    data: JSON!
    due: DateTime!
    "Lower runs first; 0 by default, negative for the built-in jobs."
    priority: Int!
    started: DateTime
    finished: DateTime
    removeAt: DateTime
    success: Boolean
    "The handler's return value, or { error, name } of a failed run (admins also see its stack)."
    result: JSON
    cronSchedule: String
    autoRescheduleOnFailure: Boolean!
    "Seconds."
    autoRescheduleOnFailureDelay: Int!
    "Seconds."
    removeDelay: Int!
    persistent: Boolean!
    tag: String
    attempt: Int!
    maxAttempts: Int
    rescheduledFromJob: ID
    "Admins only (it names a host and a process); null for others."
    lockedBy: String
    leaseExpiresAt: DateTime
    "Why the last attempt of a job that went back to pending ended (a crash, a lost lease, a shutdown)."
    lastError: String
    "When the job was cancelled; on a RUNNING job, a cancel in progress."
    cancelledAt: DateTime
    createdAt: DateTime!
    updatedAt: DateTime!
    status: JobStatus!
  }

  input SubmitJobInput {
    type: String!
    "Admins only: a user's jobs are always their own (taken from the session)."
    userId: Int
    data: JSON
    "When omitted: now, or the next cron time for a cron job."
    due: DateTime
    cronSchedule: String
    autoRescheduleOnFailure: Boolean
    "Seconds."
    autoRescheduleOnFailureDelay: Int
    "Seconds; defaults to 7 days."
    removeDelay: Int
    persistent: Boolean
    "At most one pending job per tag and user: a new one cancels the pending one."
    tag: String
    maxAttempts: Int
    "Lower runs first (-32768 to 32767, default 0). Below 0 for admins only: the built-in jobs run at -10."
    priority: Int
  }

  input JobFilter {
    type: String
    status: JobStatus
    "Admins only; a user sees their own jobs."
    userId: Int
    tag: String
  }

  enum JobOrder {
    NEWEST_FIRST
    OLDEST_FIRST
    "By due time, the earliest first (ties by id)."
    DUE_FIRST
    "By due time, the latest first."
    DUE_LAST
  }

  "The outcomes recorded in one minute (cancelled jobs count as neither)."
  type MinuteCount {
    "The start of the minute."
    minute: DateTime!
    succeeded: Int!
    failed: Int!
  }

  "A job's history through rescheduledFromJob: what it retries or succeeds, and what retries, succeeds or reruns it."
  type JobChain {
    job: WorkerJob!
    "The rows it follows, oldest first (at most limit)."
    older: [WorkerJob!]!
    "The rows that follow it, in id order (at most limit; a job may have a retry and several reruns)."
    newer: [WorkerJob!]!
    "The chain goes back further than older shows (the limit, or a link cleanup already deleted)."
    olderTruncated: Boolean!
    "More rows follow than newer shows."
    newerTruncated: Boolean!
  }

  type JobPage {
    items: [WorkerJob!]!
    "How many jobs match the filter (all pages)."
    total: Int!
  }

  type User {
    id: Int!
    walletAddress: String!
    isAdmin: Boolean!
    createdAt: DateTime
  }

  type AuthResult {
    "Send as Authorization: Bearer <token>."
    token: String!
    expiresAt: DateTime!
    user: User!
  }

  type Notification {
    id: ID!
    userId: Int!
    data: JSON!
    read: Boolean!
    createdAt: DateTime!
  }

  type WorkerInfo {
    id: String!
    pid: Int
    alive: Boolean!
    healthy: Boolean!
    problem: String
    restarts: Int!
    runningJobs: Int!
    startedAt: DateTime
  }

  type ServerInfo {
    id: String!
    hostname: String!
    pid: Int!
    jobTypes: [String!]!
    startedAt: DateTime!
    lastSeenAt: DateTime!
    "Seen within the last 30 s."
    live: Boolean!
    "Its child processes, as its /health showed them when it last refreshed its row (every few seconds)."
    workers: [WorkerInfo!]!
  }

  type JobCount {
    type: String!
    status: JobStatus!
    count: Int!
  }

  type CronRun {
    jobId: ID!
    type: String!
    userId: Int!
    tag: String
    cronSchedule: String!
    nextRun: DateTime!
  }

  type WorkerStatus {
    servers: [ServerInfo!]!
    counts: [JobCount!]!
    crons: [CronRun!]!
  }

  type CancelResult {
    job: WorkerJob!
    "CANCELLED when it is done; for a running job, its handler's signal was fired and status follows (jobUpdated)."
    status: JobStatus!
  }

  type Query {
    "The caller, or null without a session."
    me: User
    "A job the caller may see (their own; admins: any), or null."
    job(id: ID!): WorkerJob
    "Newest first by default. limit is 1..100, offset 0..10000."
    jobs(filter: JobFilter, limit: Int = 50, offset: Int = 0, order: JobOrder = NEWEST_FIRST): JobPage!
    "Admins only."
    workerStatus: WorkerStatus!
    "Admins only. Jobs finished per minute over the last minutes (1..1440), oldest first, the current minute last."
    finishedPerMinute(minutes: Int = 60): [MinuteCount!]!
    "The job (one the caller may see) and its chain, limit (1..50) links each way; null when it is not there."
    jobChain(id: ID!, limit: Int = 50): JobChain
    "Newest first. limit is 1..100."
    myNotifications(limit: Int = 50, offset: Int = 0): [Notification!]!
  }

  type Mutation {
    "A message to sign with the wallet; its nonce is single-use and expires."
    generateSiweMessage(address: String!): String!
    authenticateWithSiwe(message: String!, signature: String!): AuthResult!
    submitJob(input: SubmitJobInput!): WorkerJob!
    "All or nothing: one bad input (named jobs[i].field) writes no row."
    submitJobs(jobs: [SubmitJobInput!]!): [WorkerJob!]!
    "A pending job is cancelled at once; a running one has its handler's signal fired, on whichever server runs it. A cron job's schedule stops."
    cancelJob(id: ID!): CancelResult!
    "Submits a finished job again as a new row (rescheduledFromJob = id), as a one-off."
    rerunJob(id: ID!): WorkerJob!
    markNotificationRead(id: ID!): Notification!
    "How many were marked."
    markAllNotificationsRead: Int!
  }

  type Subscription {
    "Each notification committed for the signed-in user, from any process or server."
    notificationAdded: Notification!
    "The job each time it changes, until it finishes (its own or, for admins, any)."
    jobUpdated(id: ID!): WorkerJob!
  }
`
