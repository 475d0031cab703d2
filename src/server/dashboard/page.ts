/**
 * The dashboard's HTML shell. Everything dynamic is built by dashboard.js in the browser, from the
 * GraphQL API, with textContent only; this shell interpolates nothing but the values below, escaped.
 * No inline script or style: the Content-Security-Policy (routes.ts) forbids both.
 */

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!)

/** Why the last login failed, by the code in ?login= (a fixed set: the query string is never echoed). */
const LOGIN_MESSAGES: Record<string, string> = {
  refused: 'That token is not valid.',
  limited: 'Too many login attempts: wait a minute and try again.',
  forbidden: 'That wallet is not an admin.',
  origin: 'Sign in from this page.',
  expired: 'Your session has ended: sign in again.',
}

function layout(body: string, meta = ''): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
${meta}<title>Jobs dashboard</title>
<link rel="stylesheet" href="/dashboard/dashboard.css">
<script src="/dashboard/dashboard.js" defer></script>
</head>
<body>
${body}
</body>
</html>
`
}

export function loginPage(loginCode: string | null): string {
  const message = loginCode ? LOGIN_MESSAGES[loginCode] : undefined
  return layout(`<main class="login">
<h1>Jobs dashboard</h1>
<p class="muted">Admins only.</p>
${message ? `<p class="error" id="login-error" role="alert">${escapeHtml(message)}</p>` : '<p class="error" id="login-error" role="alert" hidden></p>'}
<form method="post" action="/dashboard/login" class="card" id="login-form">
<label for="token">Admin API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required maxlength="4096">
<button type="submit">Sign in</button>
</form>
<div class="card">
<button type="button" id="wallet-login">Sign in with wallet</button>
<p class="muted small">Uses the wallet extension of this browser (window.ethereum); the wallet must be an admin's (ADMIN_WALLETS).</p>
</div>
</main>`)
}

export function appPage(opts: { csrfToken: string; who: string; expiresAt: Date }): string {
  const meta = `<meta name="csrf-token" content="${escapeHtml(opts.csrfToken)}">
<meta name="session-expires" content="${escapeHtml(opts.expiresAt.toISOString())}">
`
  return layout(
    `<header class="top">
<h1><a href="#overview">Jobs</a></h1>
<nav>
<a href="#overview" data-view="overview">Overview</a>
<a href="#workers" data-view="workers">Workers</a>
<a href="#jobs" data-view="jobs">Jobs</a>
</nav>
<form method="post" action="/dashboard/logout" class="logout">
<span class="muted small" id="who">${escapeHtml(opts.who)}</span>
<button type="submit">Sign out</button>
</form>
</header>
<p class="error" id="app-error" role="alert" hidden></p>
<main id="view" aria-live="polite"></main>
<footer class="muted small" id="status"></footer>`,
    meta,
  )
}
