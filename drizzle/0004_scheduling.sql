DROP INDEX "worker_jobs_claim_idx";--> statement-breakpoint
ALTER TABLE "worker_jobs" ADD COLUMN "priority" smallint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "worker_jobs" ADD COLUMN "concurrency_key" text;--> statement-breakpoint
ALTER TABLE "worker_servers" ADD COLUMN "limited_types" text[] DEFAULT '{}'::text[] NOT NULL;--> statement-breakpoint
CREATE INDEX "worker_jobs_limited_idx" ON "worker_jobs" USING btree ("type","concurrency_key","priority","due","id") WHERE started IS NULL AND finished IS NULL AND concurrency_key IS NOT NULL;--> statement-breakpoint
CREATE INDEX "worker_jobs_claim_idx" ON "worker_jobs" USING btree ("priority","due","id") WHERE started IS NULL AND finished IS NULL AND concurrency_key IS NULL;--> statement-breakpoint
-- The built-in schedules run ahead of user load (BUILT_IN_PRIORITY in workers/queue/submit.ts).
UPDATE "worker_jobs" SET "priority" = -10 WHERE "user_id" = 0 AND "tag" LIKE 'system:%' AND started IS NULL AND finished IS NULL;
--> statement-breakpoint
-- As 0001, plus: a pending row of a type some server limits (worker_servers.limited_types), inserted
-- without concurrency_key (psql, a script, an older server), gets the type-wide key '', so the limited
-- claim finds it and it runs under the limit instead of beside it. Rows the server inserts carry their
-- key already, so this UPDATE finds nothing for them; with no limited type anywhere it is skipped.
CREATE OR REPLACE FUNCTION worker_jobs_notify_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  next_due timestamptz;
BEGIN
  IF EXISTS (SELECT 1 FROM worker_servers WHERE cardinality(limited_types) > 0) THEN
    UPDATE worker_jobs AS j SET concurrency_key = ''
    FROM new_rows AS n
    WHERE j.id = n.id AND n.concurrency_key IS NULL AND n.started IS NULL AND n.finished IS NULL
      AND n.type IN (SELECT unnest(limited_types) FROM worker_servers);
  END IF;
  SELECT min(due) INTO next_due FROM new_rows WHERE started IS NULL AND finished IS NULL;
  IF next_due IS NOT NULL THEN
    PERFORM pg_notify('worker_jobs', floor(extract(epoch FROM next_due) * 1000)::bigint::text);
  END IF;
  RETURN NULL;
END
$$;
