-- As 0004, except for the key given to a pending row of a limited type written without concurrency_key
-- (psql, a script, an older server): '<unkeyed>' (UNKEYED in src/server/workers/queue/limits.ts) instead
-- of ''. '' is a real key (the type-wide bucket, or what a key function returned), so a keyed type's row
-- given '' ran beside a job of its own key. A type-wide limit's claim takes '<unkeyed>' rows as they are; a
-- keyed type's claim skips them until a server computes their key (reconcileLimitKeys, at every announce).
CREATE OR REPLACE FUNCTION worker_jobs_notify_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  next_due timestamptz;
BEGIN
  IF EXISTS (SELECT 1 FROM worker_servers WHERE cardinality(limited_types) > 0) THEN
    UPDATE worker_jobs AS j SET concurrency_key = '<unkeyed>'
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
