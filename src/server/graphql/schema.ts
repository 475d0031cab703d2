/**
 * The GraphQL SDL. WorkerJob mirrors the worker_jobs table column for column (camelCase); delays are in
 * seconds, as in the table. SubmitJobInput mirrors the fields of workerManager.submitJob, whose zod schema
 * is the one place inputs are validated (GraphQL only checks the shapes it can express).
 */
export const typeDefs = /* GraphQL */ `
  "Any JSON value (object, array, string, number, boolean or null)."
  scalar JSON

  "An ISO 8601 date-time string with a time zone, e.g. 2030-01-01T00:00:00.000Z."
  scalar DateTime

  "Derived from started/finished/success: a finished job whose success is not true counts as FAILED."
  enum JobStatus {
    PENDING
    RUNNING
    SUCCEEDED
    FAILED
  }

  type WorkerJob {
    id: ID!
    type: String!
    userId: Int!
    data: JSON!
    due: DateTime!
    started: DateTime
    finished: DateTime
    removeAt: DateTime
    success: Boolean
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
    lockedBy: String
    leaseExpiresAt: DateTime
    createdAt: DateTime!
    updatedAt: DateTime!
    status: JobStatus!
  }

  input SubmitJobInput {
    type: String!
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
    "At most one pending job per tag: a new one cancels the pending one."
    tag: String
    maxAttempts: Int
  }

  type Query {
    job(id: ID!): WorkerJob
    "Newest first. limit is 1..500."
    jobs(type: String, status: JobStatus, limit: Int = 50): [WorkerJob!]!
  }

  type Mutation {
    submitJob(input: SubmitJobInput!): WorkerJob!
    "All or nothing: one bad input (named jobs[i].field) writes no row."
    submitJobs(jobs: [SubmitJobInput!]!): [WorkerJob!]!
  }
`
