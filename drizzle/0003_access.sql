CREATE TABLE "auth_nonces" (
	"nonce" text PRIMARY KEY NOT NULL,
	"address" text NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "worker_jobs" ADD COLUMN "cancelled_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "worker_servers" ADD COLUMN "workers" jsonb DEFAULT '[]'::jsonb NOT NULL;--> statement-breakpoint
CREATE INDEX "auth_nonces_address_idx" ON "auth_nonces" USING btree ("address");--> statement-breakpoint
CREATE INDEX "auth_nonces_expires_idx" ON "auth_nonces" USING btree ("expires_at");--> statement-breakpoint
CREATE INDEX "worker_jobs_finished_type_idx" ON "worker_jobs" USING btree ("type","id") WHERE finished IS NOT NULL;--> statement-breakpoint
CREATE INDEX "worker_jobs_finished_user_idx" ON "worker_jobs" USING btree ("user_id","id") WHERE finished IS NOT NULL;--> statement-breakpoint
CREATE INDEX "worker_jobs_pending_user_idx" ON "worker_jobs" USING btree ("user_id","id") WHERE started IS NULL AND finished IS NULL AND user_id <> 0;--> statement-breakpoint
CREATE INDEX "worker_jobs_tag_idx" ON "worker_jobs" USING btree ("tag","id") WHERE tag IS NOT NULL;--> statement-breakpoint
-- Live notifications: every committed notification is announced on channel notification_added (its id
-- and user), so a GraphQL subscriber on any server instance hears of rows written by any process.
CREATE OR REPLACE FUNCTION notifications_notify_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('notification_added', json_build_object('id', NEW.id, 'userId', NEW.user_id)::text);
  RETURN NULL;
END
$$;--> statement-breakpoint
CREATE TRIGGER notifications_notify_insert
  AFTER INSERT ON notifications
  FOR EACH ROW EXECUTE FUNCTION notifications_notify_insert();
