-- The raw Postgres ceiling for our row lifecycle, run by pgbench with no application in between.
-- One pgbench transaction = one batched claim and one batched finish, each its own autocommit statement,
-- the same two statements (and the same indexes) as the engine: claim 250 due rows with SKIP LOCKED,
-- then finish them by id, only if this client still holds them.
WITH claimed AS (
  UPDATE worker_jobs
  SET started = now(), locked_by = 'raw-' || :client_id,
      lease_expires_at = now() + make_interval(secs => 30), updated_at = now()
  WHERE id IN (
    SELECT id FROM worker_jobs
    WHERE started IS NULL AND finished IS NULL AND due <= now()
    ORDER BY due, id
    LIMIT 250
    FOR UPDATE SKIP LOCKED
  )
  RETURNING id
)
SELECT coalesce(array_agg(id), '{}') AS ids FROM claimed \gset
UPDATE worker_jobs
SET finished = now(), success = true, result = '{"ok":true}'::jsonb,
    remove_at = now() + make_interval(secs => remove_delay), updated_at = now()
WHERE id = ANY (':ids'::bigint[]) AND locked_by = 'raw-' || :client_id AND finished IS NULL;
