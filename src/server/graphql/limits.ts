import { EnvelopArmor } from '@escape.tech/graphql-armor'
import { useDisableIntrospection } from '@graphql-yoga/plugin-disable-introspection'
import { GraphQLError } from 'graphql'
import type { Plugin } from 'graphql-yoga'
import type { Config } from '../config'

/**
 * Limits on the shape of a GraphQL document, checked before anything runs (graphql-armor: tokens while
 * parsing, the rest as validation rules that stop at the operation's first node), and, in production,
 * no introspection and no "Did you mean …" suggestions, which would hand the schema out piece by piece.
 *
 * The numbers fit every real client of this schema with room to spare, and no bomb. The schema has no
 * cycle between object types (WorkerJob, Notification, User hold scalars only), so depth and fan-out are
 * small by construction:
 * - depth 8: the deepest selection today is `workerStatus { servers { workers { id } } }`, 4 levels;
 *   `jobs { items { … } }` and `cancelJob { job { … } }` are 3. Fragments are flattened (they add no
 *   level). 8 leaves room for the schema to grow (a subscription payload with a nested job) and stops
 *   nesting bombs of future cyclic types.
 * - aliases 15: a dashboard asks for one list per status (`pending: jobs(…)`, `failed: jobs(…)`, five
 *   statuses) plus a few counts. Batches have their own field (submitJobs, SUBMIT_BATCH_MAX), so fifteen
 *   aliased submitJob calls are no way around that cap either.
 * - cost 1000 (armor's static cost: 1 a scalar, 2 an object, ×1.5 a level): every field of every query
 *   type selected at once costs about 200, every mutation field about 220 (tests/http/limits.test.ts builds
 *   those queries from the server's schema and checks they pass); `jobs { items { all 27 fields } total }`
 *   is ~70. What 1000 stops is the same
 *   field repeated hundreds of times, which graphql-js's overlapping-fields check compares pairwise.
 *   (Armor multiplies by `first`/`last` only; list sizes here are `limit`, capped by the resolvers.)
 * - tokens 2000: the introspection query GraphiQL sends is ~160 tokens, those all-fields queries ~120-150; 2000
 *   takes a batch of about a hundred small jobs written inline. Variables do not count (they are JSON, not
 *   tokens), so bigger batches go there. It also bounds the parser's recursion: `[[[…]]]` 5,000 deep is
 *   10,000 tokens and stops at token 2001.
 * - directives 20: `@include`/`@skip` on a handful of fields; nothing else is defined.
 *
 * Each refusal is a GraphQL error naming the limit ("Query depth limit of 8 exceeded, found 11."), with
 * code GRAPHQL_VALIDATION_FAILED, `extensions.limit` (maxDepth, maxAliases, costLimit, maxTokens,
 * maxDirectives) and HTTP status 400. It is thrown, not collected: validation stops there, so the rest of
 * the rules never run over a bomb.
 */
export const LIMITS = {
  maxDepth: 8,
  maxAliases: 15,
  maxCost: 1000,
  maxTokens: 2000,
  maxDirectives: 20,
} as const

type ArmorConfig = NonNullable<ConstructorParameters<typeof EnvelopArmor>[0]>

type LimitName = 'maxDepth' | 'maxAliases' | 'costLimit' | 'maxTokens' | 'maxDirectives'

/** Armor's message, minus the misleading "Syntax Error: " it puts in front of every limit. */
const refuse = (limit: LimitName) => (_ctx: unknown, err: GraphQLError) => {
  throw new GraphQLError(err.message.replace(/^Syntax Error: /, ''), {
    extensions: { code: 'GRAPHQL_VALIDATION_FAILED', limit, http: { status: 400 } },
  })
}

const reject = (limit: LimitName) => ({ onReject: [refuse(limit)], propagateOnRejection: false, exposeLimits: true })

/** graphql-js's suggestions: ` Did you mean "a" or "b"?`, ` Did you mean the enum value "X"?`, … */
const SUGGESTION = /\s*Did you mean [^?]*\?/g

/**
 * Rewrites the errors of every result just before it is sent:
 * - a limit refusal is a 400 whatever the Accept header: yoga marks errors thrown while parsing (the
 *   token limit) as "spec" errors, which it answers with 200 under `Accept: application/json`;
 * - in production, suggestions are stripped. Armor's blockFieldSuggestion only sees validation errors
 *   and only the `Did you mean "x"?` form; enum values in literals, and input fields and enum values in
 *   variables (refused while executing, not validating) make suggestions too.
 */
function useLimitErrors(opts: { stripSuggestions: boolean }): Plugin {
  return {
    onResultProcess({ result }) {
      for (const r of Array.isArray(result) ? result : [result]) {
        const errors = (r as { errors?: readonly GraphQLError[] }).errors
        if (!Array.isArray(errors)) continue
        for (const e of errors) {
          const ext = e.extensions as Record<string, unknown> | undefined
          if (ext?.limit) ext.http = { status: 400 }
          if (opts.stripSuggestions) {
            const stripped = e.message.replace(SUGGESTION, '').trim()
            if (stripped !== e.message) e.message = stripped
          }
        }
      }
    },
  }
}

/** The plugins for createYoga (graphql/handler.ts). */
export function limitPlugins(config: Pick<Config, 'NODE_ENV'>): Plugin[] {
  const production = config.NODE_ENV === 'production'
  // One armor per limit, in this order (each stops validation when it throws): a depth bomb is a cost
  // bomb too, and should be refused for its depth.
  const off = { enabled: false }
  const only = (one: ArmorConfig) =>
    new EnvelopArmor({ blockFieldSuggestion: off, maxTokens: off, maxDepth: off, maxAliases: off, maxDirectives: off, costLimit: off, ...one }).protect()
      .plugins as Plugin[]
  const armor = [
    ...only({ maxTokens: { n: LIMITS.maxTokens, ...reject('maxTokens') } }),
    ...only({ maxDepth: { n: LIMITS.maxDepth, flattenFragments: true, ...reject('maxDepth') } }),
    ...only({ maxAliases: { n: LIMITS.maxAliases, ...reject('maxAliases') } }),
    ...only({ maxDirectives: { n: LIMITS.maxDirectives, ...reject('maxDirectives') } }),
    ...only({ costLimit: { maxCost: LIMITS.maxCost, flattenFragments: true, ...reject('costLimit') } }),
    ...(production ? only({ blockFieldSuggestion: { mask: '' } }) : []),
  ]
  const plugins: Plugin[] = [...armor, useLimitErrors({ stripSuggestions: production })]
  if (production) plugins.push(useDisableIntrospection())
  return plugins
}
