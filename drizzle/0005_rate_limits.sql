CREATE TABLE "worker_rate_starts" (
	"type" text NOT NULL,
	"key" text NOT NULL,
	"at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE INDEX "worker_rate_starts_idx" ON "worker_rate_starts" USING btree ("type","key","at");