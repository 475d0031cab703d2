/** A server of the fault suite: `npm start`'s entry (main()) with the recorder job type added through jobModules. */
import { main } from '../src/server/main'

await main({ jobModules: [new URL('./recorder.ts', import.meta.url).pathname] })
