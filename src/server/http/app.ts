import { Elysia } from 'elysia'
import type { ServerApp } from '../serverApp'
import type { WorkerManager } from '../workers/manager'
import { checkHealth } from './health'

/** The HTTP surface. Routes get the ServerApp; none of them runs SQL of its own except through it. */
export function createHttpApp(serverApp: ServerApp, manager: WorkerManager | null) {
  return new Elysia().get('/health', async ({ set }) => {
    const { code, body } = await checkHealth(serverApp, manager)
    set.status = code
    return body
  })
}
