import { GraphQLError, GraphQLScalarType, Kind, valueFromASTUntyped } from 'graphql'

/** Any JSON value, passed through as is (job data and results are free-form; their schemas are zod's job). */
export const JSONScalar = new GraphQLScalarType({
  name: 'JSON',
  serialize: (value) => value,
  parseValue: (value) => value,
  parseLiteral: (ast, variables) => valueFromASTUntyped(ast, variables),
})

/**
 * Dates go out as ISO strings. Coming in, the scalar only insists on a string: the resolver turns it into a
 * Date and, if it is not a valid ISO date-time, throws an error naming the input field (the scalar cannot
 * know which field it is parsing).
 */
export const DateTimeScalar = new GraphQLScalarType({
  name: 'DateTime',
  serialize(value) {
    if (value instanceof Date) return value.toISOString()
    if (typeof value === 'string') return new Date(value).toISOString()
    throw new GraphQLError(`DateTime cannot represent ${String(value)}`)
  },
  parseValue(value) {
    if (typeof value !== 'string') throw new GraphQLError('DateTime must be an ISO 8601 string', { extensions: { code: 'BAD_USER_INPUT' } })
    return value
  },
  parseLiteral(ast) {
    if (ast.kind !== Kind.STRING) throw new GraphQLError('DateTime must be an ISO 8601 string', { extensions: { code: 'BAD_USER_INPUT' } })
    return ast.value
  },
})

// Date and time with a zone: without one, "2030-01-01T00:00" would depend on the server's time zone.
const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/i

/** A valid ISO 8601 date-time with a zone, as a Date; null when it is not one. */
export function parseIsoDateTime(value: string): Date | null {
  if (!ISO_DATE_TIME.test(value)) return null
  const d = new Date(value)
  return Number.isNaN(d.getTime()) ? null : d
}
