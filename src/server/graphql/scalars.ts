import { GraphQLError, GraphQLScalarType, Kind, valueFromASTUntyped } from 'graphql'

/** Any JSON value, passed through as is (job data and results are free-form; their schemas are zod's job). */
export const JSONScalar = new GraphQLScalarType({
  name: 'JSON',
  serialize: (value) => value,
  parseValue: (value) => value,
  parseLiteral: (ast, variables) => valueFromASTUntyped(ast, variables),
})

/**
 * Dates go out as ISO strings. Coming in, the scalar only insists on a string: submit's validation parses
 * it strictly (parseIsoDateTime) and checks its range, and its error names the input field (`due`,
 * `jobs[3].due`), which the scalar cannot know.
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

// The strict parser (no 2030-02-31 rolled over into March, a zone required), shared with submit's own
// validation of `due`, which also checks the range Postgres can store.
export { parseIsoDateTime } from '../workers/queue/submit'
