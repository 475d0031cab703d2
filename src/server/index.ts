/** Entry point: `bun src/server/index.ts` (npm start). */
import { main } from './main'

await main()
