CREATE TABLE "worker_servers" (
	"id" text PRIMARY KEY NOT NULL,
	"hostname" text NOT NULL,
	"pid" integer NOT NULL,
	"job_types" text[] NOT NULL,
	"started_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_seen_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
-- Every job is bounded now: rows without a limit get the default one.
UPDATE "worker_jobs" SET "max_attempts" = 25 WHERE "max_attempts" IS NULL;--> statement-breakpoint
ALTER TABLE "worker_jobs" ALTER COLUMN "max_attempts" SET DEFAULT 25;--> statement-breakpoint
ALTER TABLE "worker_jobs" ALTER COLUMN "max_attempts" SET NOT NULL;--> statement-breakpoint
ALTER TABLE "worker_jobs" ADD COLUMN "last_error" text;--> statement-breakpoint
-- Tags are scoped to their user; the built-in schedules move to the reserved system: prefix.
DROP INDEX "worker_jobs_pending_tag_uidx";--> statement-breakpoint
UPDATE "worker_jobs" SET "tag" = 'system:' || "type"
  WHERE "user_id" = 0 AND "tag" = "type" AND "type" IN ('removeOldWorkerJobs', 'watchChain', 'deployMulticall3')
    AND started IS NULL AND finished IS NULL;--> statement-breakpoint
CREATE UNIQUE INDEX "worker_jobs_pending_tag_uidx" ON "worker_jobs" USING btree ("user_id","tag") WHERE tag IS NOT NULL AND started IS NULL AND finished IS NULL;
