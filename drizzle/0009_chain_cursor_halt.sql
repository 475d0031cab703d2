ALTER TABLE "chain_cursors" ADD COLUMN "halted_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "chain_cursors" ADD COLUMN "halted_reason" text;