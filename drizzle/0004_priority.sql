DROP INDEX "worker_jobs_claim_idx";--> statement-breakpoint
ALTER TABLE "worker_jobs" ADD COLUMN "priority" smallint DEFAULT 0 NOT NULL;--> statement-breakpoint
CREATE INDEX "worker_jobs_claim_idx" ON "worker_jobs" USING btree ("priority","due","id") WHERE started IS NULL AND finished IS NULL;--> statement-breakpoint
-- The built-in schedules run ahead of user load (BUILT_IN_PRIORITY in workers/queue/submit.ts).
UPDATE "worker_jobs" SET "priority" = -10 WHERE "user_id" = 0 AND "tag" LIKE 'system:%' AND started IS NULL AND finished IS NULL;
