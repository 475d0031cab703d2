import { GraphQLError } from 'graphql'
import type { Plugin } from 'graphql-yoga'

/** `Variable "$input" got invalid value … at "input.removeDelay"; …`: graphql-js's coercion message. */
const VARIABLE_ERROR = /^Variable "\$(\w+)" (?:got invalid value .*? at "([^"]+)"|got invalid value|of required type|of non-null type)/s

/**
 * graphql-js reports a variable of the wrong type (a string for an Int, an unknown input field, a bad enum)
 * without an error code, unlike every other bad input here. This gives such errors the same shape:
 * code BAD_USER_INPUT and the field, the variable's path as the message names it (`input.removeDelay`,
 * `jobs[2].type`, `id`).
 */
export function useVariableErrorCodes(): Plugin {
  const coded = (err: GraphQLError): GraphQLError => {
    if (err.extensions?.code) return err
    const m = VARIABLE_ERROR.exec(err.message)
    if (!m) return err
    return new GraphQLError(err.message, { nodes: err.nodes, extensions: { ...err.extensions, code: 'BAD_USER_INPUT', field: m[2] ?? m[1] } })
  }
  const fix = (errors: readonly GraphQLError[] | undefined) => errors?.map(coded)
  return {
    onExecute: () => ({
      onExecuteDone: ({ result, setResult }) => {
        if (!('errors' in result) || !result.errors) return
        setResult({ ...result, errors: fix(result.errors) })
      },
    }),
    onSubscribe: () => ({
      onSubscribeResult: ({ result, setResult }) => {
        if (!('errors' in result) || !result.errors) return
        setResult({ ...result, errors: fix(result.errors) })
      },
    }),
  }
}
