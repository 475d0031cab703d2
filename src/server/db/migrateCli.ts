import { loadEnvConfig } from '../config'
import { runMigrations } from './migrate'

const { DATABASE_URL } = loadEnvConfig()
if (!DATABASE_URL) {
  // Nothing to migrate: `npm start` migrates the embedded development database itself at boot.
  console.error('Missing environment variable DATABASE_URL: required by db:migrate (npm start migrates its embedded development database itself)')
  process.exit(1)
}
await runMigrations(DATABASE_URL)
console.log('migrations applied')
