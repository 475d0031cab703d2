-- Wake the workers when jobs are inserted, whoever inserts them (the server, a script, psql).
-- Statement-level with a transition table: a bulk insert of 100,000 rows sends one notification, not 100,000.
-- The payload is the earliest due time (epoch ms) among the new pending rows, so an idle worker can sleep
-- exactly until then instead of polling.
CREATE OR REPLACE FUNCTION worker_jobs_notify_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  next_due timestamptz;
BEGIN
  SELECT min(due) INTO next_due FROM new_rows WHERE started IS NULL AND finished IS NULL;
  IF next_due IS NOT NULL THEN
    PERFORM pg_notify('worker_jobs', floor(extract(epoch FROM next_due) * 1000)::bigint::text);
  END IF;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER worker_jobs_notify_insert
  AFTER INSERT ON worker_jobs
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION worker_jobs_notify_insert();
