/**
 * The one owner of URL redaction. RPC providers put API keys in the URL (path, query or user info), and
 * viem quotes the full URL in its error messages (`URL: https://host/v3/<key>`), so every error text that
 * can reach a job result, a log line or an API response goes through here first.
 *
 * What is kept of a URL: `scheme://host[:port]`. Path, query, fragment and user info are dropped.
 * Every URL in the text is treated so, not only the configured ones: a text cannot tell an RPC URL
 * from another one, and a dropped path costs nothing but detail.
 */

/** `scheme://` followed by everything up to white space, a quote or a parenthesis or brace that ends it in prose and JSON (square brackets stay: an IPv6 host has them). */
const URL_IN_TEXT = /\b[a-z][a-z0-9+.-]*:\/\/[^\s"'`<>(){}\\]+/gi

/** scheme://host[:port] of one URL (user info, path, query and fragment dropped). */
export function redactUrl(url: string): string {
  if (URL.canParse(url)) {
    const u = new URL(url)
    if (u.host) return `${u.protocol}//${u.host}`
  }
  // Not parseable: take the scheme, then the host part after the last "@" (a password may hold "/" or "@"),
  // cut at the first "/", "?" or "#".
  const m = /^([a-z][a-z0-9+.-]*:\/\/)(.*)$/i.exec(url)
  if (!m) return '[redacted URL]'
  const rest = m[2]!
  const host = rest.slice(rest.lastIndexOf('@') + 1).split(/[/?#]/)[0]!
  return `${m[1]}${host}`
}

/** The text with every URL in it reduced to scheme://host[:port]. Cheap when the text holds no "://". */
export function redactUrls(text: string): string {
  if (!text.includes('://')) return text
  return text.replace(URL_IN_TEXT, redactUrl)
}

/**
 * A deep copy of a value with every string redacted (objects, arrays and errors walked to a small depth).
 * For serialized errors and job results, whose shape is not known in advance.
 */
export function redactDeep<T>(value: T, depth = 6): T {
  if (typeof value === 'string') return redactUrls(value) as T
  if (depth <= 0 || value === null || typeof value !== 'object') return value
  if (Array.isArray(value)) return value.map((v) => redactDeep(v, depth - 1)) as T
  if (value instanceof Date) return value
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) out[k] = redactDeep(v, depth - 1)
  return out as T
}

/**
 * Redacts an Error in place: its message, stack and the string fields viem adds (shortMessage, details,
 * metaMessages, url), down its cause chain. In place so that `instanceof` checks and the cause chain
 * keep working for the code that classifies the error afterwards.
 */
export function redactError<E>(err: E, depth = 8): E {
  let e: unknown = err
  for (let i = 0; i < depth && e && typeof e === 'object'; i++) {
    const rec = e as Record<string, unknown>
    for (const key of ['message', 'stack', 'shortMessage', 'details', 'url']) {
      const v = rec[key]
      if (typeof v === 'string' && v.includes('://')) {
        try {
          rec[key] = redactUrls(v)
        } catch {
          // A read-only property: leave it; the serializers redact what they write.
        }
      }
    }
    if (Array.isArray(rec.metaMessages)) rec.metaMessages = rec.metaMessages.map((m) => (typeof m === 'string' ? redactUrls(m) : m))
    e = rec.cause
  }
  return err
}
