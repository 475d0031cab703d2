/**
 * A refusal the caller may read: the GraphQL layer turns it into an error with this code (and the field,
 * when one input is to blame). Never carries a stack, a host name or another user's data.
 */
export type AccessCode = 'UNAUTHENTICATED' | 'FORBIDDEN' | 'RATE_LIMITED' | 'LIMIT_EXCEEDED' | 'BAD_USER_INPUT' | 'NOT_FOUND' | 'UNAVAILABLE'

export class AccessError extends Error {
  constructor(
    readonly code: AccessCode,
    message: string,
    readonly field?: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message)
    this.name = 'AccessError'
  }
}

export const unauthenticated = (message = 'sign in first: this needs a session (Authorization: Bearer <token>)') =>
  new AccessError('UNAUTHENTICATED', message)
export const forbidden = (message: string, field?: string) => new AccessError('FORBIDDEN', message, field)
