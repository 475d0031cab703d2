import { GraphQLError } from 'graphql'
import { AccessError } from '../auth/errors'
import { LiveLimitError } from '../live/hub'
import { JobActionError } from '../workers/queue/cancel'
import { JobInputError } from '../workers/queue/submit'

/** A refusal the caller may read, with its code and (when one input is to blame) the field. */
export const apiError = (code: string, message: string, field?: string, extra: Record<string, unknown> = {}) =>
  new GraphQLError(message, { extensions: { code, ...(field ? { field } : {}), ...extra } })

export const badInput = (field: string, message: string) => apiError('BAD_USER_INPUT', message, field)

/** The errors whose message is meant for the caller, as GraphQL errors; null for anything else. */
function readable(err: unknown): GraphQLError | null {
  if (err instanceof GraphQLError) return err
  if (err instanceof AccessError) return apiError(err.code, err.message, err.field, err.extra)
  if (err instanceof JobInputError) return badInput(err.field, err.message)
  if (err instanceof JobActionError) return apiError(err.code === 'NOT_FOUND' ? 'NOT_FOUND' : 'CONFLICT', err.message, 'id')
  if (err instanceof LiveLimitError) return apiError('LIMIT_EXCEEDED', err.message)
  return null
}

/** Runs a resolver; an unexpected error passes through for yoga to log and mask ("Unexpected error."). */
export async function answering<T>(work: () => Promise<T> | T): Promise<T> {
  try {
    return await work()
  } catch (err) {
    throw readable(err) ?? err
  }
}
