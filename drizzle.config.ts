import { defineConfig } from 'drizzle-kit'

// drizzle-kit runs outside the server, so it reads DATABASE_URL itself; the default matches config.ts.
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/server/db/schema.ts',
  out: './drizzle',
  dbCredentials: { url: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres' },
})
