/**
 * The identity provider's pages: server-rendered HTML that works without JavaScript (there is none), under a strict
 * Content-Security-Policy: nothing inline, styles from our own origin, forms posting only to our own origin (plus the
 * app's redirect target, which a sign-in ends by navigating to). Every value is escaped; every form carries the
 * CSRF token of its interaction.
 */
export const escapeHtml = (value: unknown): string =>
  String(value ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** The CSP of every identity page; `formTargets` are origins or schemes a form's redirect chain may end at. */
export function pageSecurityPolicy(formTargets: string[] = []): string {
  const forms = ["'self'", ...formTargets].join(' ');
  return `default-src 'none'; style-src 'self'; img-src 'self' data:; form-action ${forms}; frame-ancestors 'none'; base-uri 'none'`;
}

export interface PageFrame {
  title: string;
  /** Shown above the heading: the tenant's (or the deployment's) name. */
  organization: string;
  body: string;
}

export function page(frame: PageFrame): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${escapeHtml(frame.title)} – ${escapeHtml(frame.organization)}</title>
<link rel="stylesheet" href="/idp/static/style.css">
</head>
<body>
<main class="card">
<p class="org">${escapeHtml(frame.organization)}</p>
<h1>${escapeHtml(frame.title)}</h1>
${frame.body}
</main>
</body>
</html>`;
}

/** An error line announced to screen readers (role=alert), or nothing. */
export const alert = (message?: string): string => (message ? `<p class="error" role="alert" id="form-error">${escapeHtml(message)}</p>` : '');

const hidden = (name: string, value: string) => `<input type="hidden" name="${escapeHtml(name)}" value="${escapeHtml(value)}">`;

export interface LoginView {
  action: string;
  csrf: string;
  clientName: string;
  username?: string;
  error?: string;
  /** The certificate sign-in page's URL, when certificate sign-in is configured. */
  certificateUrl?: string;
}

export function loginBody(v: LoginView): string {
  const described = v.error ? ' aria-describedby="form-error" aria-invalid="true"' : '';
  // After a failed attempt the username is kept and the password is not, so the focus goes where the typing is due.
  const retype = Boolean(v.error && v.username);
  return `<p>Sign in to continue to <strong>${escapeHtml(v.clientName)}</strong>.</p>
${alert(v.error)}
<form method="post" action="${escapeHtml(v.action)}">
${hidden('csrf', v.csrf)}
<label for="username">Username</label>
<input id="username" name="username" type="text" autocomplete="username" autocapitalize="none" spellcheck="false" required${retype ? '' : ' autofocus'} value="${escapeHtml(v.username ?? '')}"${described}>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required${retype ? ' autofocus' : ''}${described}>
<button type="submit">Sign in</button>
</form>
${v.certificateUrl ? `<p class="alt"><a href="${escapeHtml(v.certificateUrl)}">Sign in with a certificate</a></p>` : ''}`;
}

export interface MfaView {
  action: string;
  csrf: string;
  username: string;
  error?: string;
}

export function mfaBody(v: MfaView): string {
  const described = v.error ? ' aria-describedby="form-error" aria-invalid="true"' : '';
  return `<p>Signing in as <strong>${escapeHtml(v.username)}</strong>. Enter the 6-digit code from your authenticator app, or one of your recovery codes.</p>
${alert(v.error)}
<form method="post" action="${escapeHtml(v.action)}">
${hidden('csrf', v.csrf)}
<label for="code">Verification code</label>
<input id="code" name="code" type="text" inputmode="numeric" autocomplete="one-time-code" autocapitalize="none" spellcheck="false" required autofocus${described}>
<button type="submit">Verify</button>
</form>`;
}

export interface EnrollView {
  action: string;
  csrf: string;
  username: string;
  secretBase32: string;
  otpauthUri: string;
  error?: string;
  required: boolean;
  skipAction?: string;
}

export function enrollBody(v: EnrollView): string {
  const grouped = v.secretBase32.replace(/(.{4})/g, '$1 ').trim();
  const described = v.error ? ' aria-describedby="form-error" aria-invalid="true"' : '';
  return `<p>${v.required ? 'Your organisation requires a second step at sign-in.' : 'Protect your account with a second step at sign-in.'}
Add this account to an authenticator app, then enter the code it shows.</p>
<p>Key for <strong>${escapeHtml(v.username)}</strong>:</p>
<p class="secret"><code>${escapeHtml(grouped)}</code></p>
<p class="small">Or open this link on the phone with the app: <a href="${escapeHtml(v.otpauthUri)}">add to authenticator</a></p>
${alert(v.error)}
<form method="post" action="${escapeHtml(v.action)}">
${hidden('csrf', v.csrf)}
<label for="code">Code from the app</label>
<input id="code" name="code" type="text" inputmode="numeric" autocomplete="one-time-code" required autofocus${described}>
<button type="submit">Turn on two-step sign-in</button>
</form>
${v.skipAction ? `<form method="post" action="${escapeHtml(v.skipAction)}">${hidden('csrf', v.csrf)}<button type="submit" class="secondary">Not now</button></form>` : ''}`;
}

export interface RecoveryCodesView {
  action: string;
  csrf: string;
  codes: string[];
}

export function recoveryCodesBody(v: RecoveryCodesView): string {
  return `<p>Two-step sign-in is on. Keep these recovery codes somewhere safe: each signs you in once if you lose your phone.
They are shown only now.</p>
<ul class="codes">${v.codes.map((c) => `<li><code>${escapeHtml(c)}</code></li>`).join('')}</ul>
<form method="post" action="${escapeHtml(v.action)}">
${hidden('csrf', v.csrf)}
<button type="submit">I have saved them — continue</button>
</form>`;
}

export interface ConsentView {
  action: string;
  abortAction: string;
  csrf: string;
  clientName: string;
  username: string;
  scopes: string[];
  deviceId?: string;
}

const SCOPE_TEXT: Record<string, string> = {
  mail: 'Read and change your mail, calendar and contacts, and send mail as you',
  admin: 'Manage your organisation’s users and devices',
  offline_access: 'Stay signed in on this device',
  openid: 'Know who you are',
  email: 'See your email address',
  profile: 'See your name',
};

export function consentBody(v: ConsentView): string {
  const items = v.scopes.map((s) => `<li>${escapeHtml(SCOPE_TEXT[s] ?? s)}</li>`).join('');
  return `<p><strong>${escapeHtml(v.clientName)}</strong> wants to use your account <strong>${escapeHtml(v.username)}</strong>${
    v.deviceId ? ` on the device <code>${escapeHtml(v.deviceId)}</code>` : ''
  }:</p>
<ul>${items}</ul>
<form method="post" action="${escapeHtml(v.action)}">
${hidden('csrf', v.csrf)}
<button type="submit">Allow</button>
</form>
<form method="post" action="${escapeHtml(v.abortAction)}">
${hidden('csrf', v.csrf)}
<button type="submit" class="secondary">Cancel</button>
</form>`;
}

export function messageBody(message: string, detail?: string): string {
  return `<p>${escapeHtml(message)}</p>${detail ? `<p class="small">${escapeHtml(detail)}</p>` : ''}`;
}

export interface DeviceCodeView {
  action: string;
  xsrf: string;
  userCode?: string;
  error?: string;
}

export function deviceCodeInputBody(v: DeviceCodeView): string {
  const described = v.error ? ' aria-describedby="form-error" aria-invalid="true"' : '';
  return `<p>Enter the code shown on the device or in the terminal that is signing in.</p>
${alert(v.error)}
<form method="post" action="${escapeHtml(v.action)}">
${hidden('xsrf', v.xsrf)}
<label for="user_code">Code</label>
<input id="user_code" name="user_code" type="text" autocomplete="off" autocapitalize="characters" spellcheck="false" required autofocus value="${escapeHtml(v.userCode ?? '')}"${described}>
<button type="submit">Continue</button>
</form>`;
}

export function deviceCodeConfirmBody(v: DeviceCodeView & { clientName: string }): string {
  return `<p><strong>${escapeHtml(v.clientName)}</strong> is asking to sign in. Continue only if this code is shown on your device:</p>
<p class="secret"><code>${escapeHtml(v.userCode ?? '')}</code></p>
<form method="post" action="${escapeHtml(v.action)}">
${hidden('xsrf', v.xsrf)}${hidden('user_code', v.userCode ?? '')}${hidden('confirm', 'yes')}
<button type="submit">Continue</button>
</form>
<form method="post" action="${escapeHtml(v.action)}">
${hidden('xsrf', v.xsrf)}${hidden('user_code', v.userCode ?? '')}${hidden('abort', 'yes')}
<button type="submit" class="secondary">Cancel</button>
</form>`;
}
