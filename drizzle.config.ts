import { defineConfig } from 'drizzle-kit'

// drizzle-kit runs outside the server, so it reads DATABASE_URL itself. The default is the embedded
// development Postgres that `npm start` runs without DATABASE_URL (its port when 54329 was free; it logs its URL).
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/server/db/schema.ts',
  out: './drizzle',
  dbCredentials: { url: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:54329/dapp' },
})
