// A real OpenID Connect provider (npm oidc-provider v9) for portcullis tests.
//
//   node test/oidc/provider.mjs [--port 0] [--client-id ID] [--client-secret S]
//        [--redirect-uri URI]... [--conform-id-token-claims true|false]
//        [--auth-method client_secret_basic|client_secret_post]
//        [--pkce-required true|false] [--users FILE.json] [--jwks FILE.json]
//        [--post-logout-redirect-uri URI]... [--backchannel-logout-uri URI]
//        [--backchannel-logout-session-required true|false]
//        [--clock-skew SECONDS] [--id-token-ttl SECONDS] [--watch-stdin]
//        [--signing-algs RS256,PS256,ES256,EdDSA] [--clients FILE.json]
//        [--issuer-trailing-slash] [--amr pwd,otp] [--acr VALUE]
//        [--client-auth-error unauthorized_client] [--code-error invalid_code]
//        [--rp-initiated-logout true|false]
//        [--refresh-error invalid_request]
//
// Every flag also reads from the environment (OIDC_PORT, OIDC_CLIENT_ID,
// OIDC_CLIENT_SECRET, OIDC_REDIRECT_URIS comma separated,
// OIDC_CONFORM_ID_TOKEN_CLAIMS, OIDC_AUTH_METHOD, OIDC_PKCE_REQUIRED,
// OIDC_USERS, OIDC_JWKS, OIDC_CLOCK_SKEW, OIDC_ID_TOKEN_TTL,
// OIDC_BACKCHANNEL_LOGOUT_SESSION_REQUIRED). Once it
// listens it prints exactly one line to stdout, "READY http://127.0.0.1:PORT";
// everything else goes to stderr.
//
// Users: alice/alice-pw (groups cvat-admins, annotators) and bob/bob-pw
// (annotators), plus those in --users: a JSON object keyed by username whose
// values hold "password" and claims (email, email_verified, name, given_name,
// family_name, groups, and any other key, which is released with the profile
// scope). A user given there replaces a built-in one of the same name.
//
// Logins go through a plain HTML form at /interaction/:uid (fields username,
// password; a submit named "abort" cancels with access_denied). Consent is
// never asked: every requested scope is granted. The token endpoint insists on
// the registered client authentication method (Basic header or body).
//
// --backchannel-logout-session-required (default true) registers the client
// with backchannel_logout_session_required: its ID tokens and logout tokens
// carry sid. With false they carry none, and a logout token names the user
// by sub alone, as OIDC Back-Channel Logout 1.0 (2.4) allows.
//
// --clock-skew runs the provider's clock that many seconds ahead of the
// machine's (negative: behind), as an IdP without NTP does: the iat, exp and
// auth_time of what it issues are off by as much. --id-token-ttl sets how
// long its ID tokens live (default one hour), so that a clock behind by a
// few minutes issues tokens already expired while its own login cookies,
// which live an hour, still work.
//
// --signing-algs names the algorithms the provider holds a signing key for
// (default RS256 alone): PS256 adds an RSA key for RSASSA-PSS, ES256 a P-256
// key, EdDSA an Ed25519 key (which also signs for the fully-specified alg
// Ed25519). Discovery lists an algorithm only when it has a key for it.
//
// --clients FILE.json registers more clients beside the one the flags
// describe: a JSON array of client metadata (client_id and redirect_uris at
// least; the secret, auth method and grant types default to the main
// client's), for instance id_token_signed_response_alg,
// userinfo_signed_response_alg or subject_type "pairwise". Keys starting
// with x_ are the provider's behaviour towards that client, not metadata:
//   x_userinfo_only: [claims]  kept out of its ID tokens, released at
//                              userinfo alone (a Keycloak mapper with "add
//                              to ID token" off)
//   x_refresh_tokens: "always" issued at every code exchange, without
//                              offline_access (Okta, Keycloak); "never"
//                              none at all; default: only with offline_access
//   x_rotate_refresh_tokens: false  the same refresh token again at every
//                              refresh, instead of a new one (the default)
//   x_refresh_id_token: false  no ID token in a refresh's answer, only
//                              access and refresh tokens (Glewlwyd 2.7),
//                              as OIDC Core 12.2 allows
//
// --amr and --acr are what every login says of how the user authenticated
// (RFC 8176 values, comma separated, and an acr): its ID tokens carry them
// as amr and acr, with auth_time, and so do those of its refreshes. Without
// them they carry none of the three.
//
// --client-auth-error unauthorized_client answers a client authentication
// at the token endpoint that it does not accept (a wrong secret, an unknown
// client, the other of client_secret_basic and client_secret_post) with
// 403 {"error":"unauthorized_client"}, as Glewlwyd 2.7 does, instead of
// RFC 6749's 401 invalid_client.
//
// --code-error invalid_code answers a code it does not take (made up,
// spent, expired) with 403 {"error":"invalid_code"}, as Glewlwyd 2.7 does,
// instead of RFC 6749's 400 invalid_grant.
//
// --rp-initiated-logout false turns off RP-Initiated Logout 1.0: the
// discovery document names no end_session_endpoint, as Authelia 4.38's and
// Google's do not.
// --refresh-error invalid_request answers a refresh token it does not take
// (spent, expired, made up) with 400 {"error":"invalid_request"}, as Dex
// does ("Refresh token is invalid or has already been claimed by another
// client."), instead of RFC 6749's invalid_grant.
//
// --issuer-trailing-slash names the issuer http://127.0.0.1:PORT/ (with
// the slash), as some IdPs spell theirs; its ID tokens carry it so.
//
// GET /test/token-requests answers {"count": N}, the POSTs to the token
// endpoint since start (code exchanges and refreshes, answered or refused),
// so that a test can tell how often the client asked without wrapping the
// client's own transport.
//
// POST /test/rotate-keys rotates the signing keys as Keycloak, Entra ID,
// Okta and Hydra (POST /admin/keys/...) do, without a restart: a new key
// (a new kid) for each algorithm of --signing-algs signs from then on, and
// the keys before stay published after it, for tokens signed with them.
// Sessions, grants and tokens are kept, so the next logout token for a
// session begun before is signed with the new key. The keys go to --jwks
// too. It answers {"kids": [...]}, the new keys' kids.
//
// POST /test/rotate-keys?alg=ES256 (or RS256, PS256) rotates to a key of
// that algorithm alone, as Hydra does when its ID token key set gets a key
// of another algorithm (hydra create jwks hydra.openid.id-token --alg
// ES256): every client's ID tokens and logout tokens are signed with it
// from then on, and the discovery document lists it, beside the
// algorithms of the keys before, which stay published.
//
// POST /test/rotate-keys?keep_kid=1 rotates the keys but keeps their kids,
// as an IdP whose administrator configured a constant kid does: each new
// key takes the kid of the key it replaces, which is published no more.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';
// Not part of oidc-provider's API (its keys are set once, from the jwks
// option): what the constructor calls with that option, called again with
// the rotated set. package-lock.json pins the version it is read from.
import initializeKeystore from 'oidc-provider/lib/helpers/initialize_keystore.js';

const env = process.env;
const { values: args } = parseArgs({
  options: {
    host: { type: 'string', default: env.OIDC_HOST || '127.0.0.1' },
    port: { type: 'string', default: env.OIDC_PORT || '0' },
    'client-id': { type: 'string', default: env.OIDC_CLIENT_ID ?? 'portcullis' },
    'client-secret': { type: 'string', default: env.OIDC_CLIENT_SECRET ?? 'portcullis-secret' },
    'redirect-uri': { type: 'string', multiple: true, default: splitList(env.OIDC_REDIRECT_URIS) },
    'post-logout-redirect-uri': { type: 'string', multiple: true, default: splitList(env.OIDC_POST_LOGOUT_REDIRECT_URIS) },
    'backchannel-logout-uri': { type: 'string', default: env.OIDC_BACKCHANNEL_LOGOUT_URI || '' },
    'backchannel-logout-session-required': { type: 'string', default: env.OIDC_BACKCHANNEL_LOGOUT_SESSION_REQUIRED || 'true' },
    'conform-id-token-claims': { type: 'string', default: env.OIDC_CONFORM_ID_TOKEN_CLAIMS || 'true' },
    'auth-method': { type: 'string', default: env.OIDC_AUTH_METHOD || 'client_secret_basic' },
    'pkce-required': { type: 'string', default: env.OIDC_PKCE_REQUIRED || 'false' },
    users: { type: 'string', default: env.OIDC_USERS || '' },
    jwks: { type: 'string', default: env.OIDC_JWKS || '' },
    'clock-skew': { type: 'string', default: env.OIDC_CLOCK_SKEW || '0' },
    'id-token-ttl': { type: 'string', default: env.OIDC_ID_TOKEN_TTL || '' },
    'watch-stdin': { type: 'boolean', default: false },
    'signing-algs': { type: 'string', default: env.OIDC_SIGNING_ALGS || 'RS256' },
    clients: { type: 'string', default: env.OIDC_CLIENTS || '' },
    'issuer-trailing-slash': { type: 'boolean', default: false },
    amr: { type: 'string', default: env.OIDC_AMR || '' },
    acr: { type: 'string', default: env.OIDC_ACR || '' },
    'client-auth-error': { type: 'string', default: env.OIDC_CLIENT_AUTH_ERROR || 'invalid_client' },
    'code-error': { type: 'string', default: env.OIDC_CODE_ERROR || 'invalid_grant' },
    'rp-initiated-logout': { type: 'string', default: env.OIDC_RP_INITIATED_LOGOUT || 'true' },
    'refresh-error': { type: 'string', default: env.OIDC_REFRESH_ERROR || 'invalid_grant' },
  },
});

// The provider reads the time from Date.now (its epochTime helper, cookie
// expiries), so moving that moves everything it stamps.
const skewSeconds = Number(args['clock-skew']);
if (!Number.isFinite(skewSeconds)) {
  console.error(`provider.mjs: --clock-skew must be a number of seconds, got ${args['clock-skew']}`);
  process.exit(2);
}
if (skewSeconds !== 0) {
  const realNow = Date.now;
  Date.now = () => realNow() + skewSeconds * 1000;
}

function splitList(s) {
  return s ? s.split(',').map((x) => x.trim()).filter(Boolean) : [];
}

function flag(name) {
  const v = String(args[name]).toLowerCase();
  if (v !== 'true' && v !== 'false') {
    fail(`--${name} must be true or false, got ${args[name]}`);
  }
  return v === 'true';
}

function fail(msg) {
  console.error(`provider.mjs: ${msg}`);
  process.exit(2);
}

// Users and the claims they release. sub is the username.
const users = {
  alice: {
    password: 'alice-pw',
    email: 'alice@example.com',
    email_verified: true,
    name: 'Alice Admin',
    given_name: 'Alice',
    family_name: 'Admin',
    groups: ['cvat-admins', 'annotators'],
  },
  bob: {
    password: 'bob-pw',
    email: 'bob@example.com',
    email_verified: true,
    name: 'Bob Builder',
    given_name: 'Bob',
    family_name: 'Builder',
    groups: ['annotators'],
  },
};
if (args.users) {
  Object.assign(users, JSON.parse(fs.readFileSync(args.users, 'utf8')));
}

const standardClaims = {
  openid: ['sub'],
  email: ['email', 'email_verified'],
  profile: ['preferred_username', 'name', 'given_name', 'family_name'],
  groups: ['groups'],
};
// With --amr or --acr, ID tokens say how the user signed in (and when):
// released with openid, as a provider that always sends them does.
if (args.amr || args.acr) {
  standardClaims.openid.push('amr', 'acr', 'auth_time');
}
// Any other claim a user carries is released with the profile scope, so tests
// can exercise custom and nested claims.
const known = new Set(['password', 'sub', ...Object.values(standardClaims).flat()]);
for (const user of Object.values(users)) {
  for (const key of Object.keys(user)) {
    if (!known.has(key)) {
      known.add(key);
      standardClaims.profile.push(key);
    }
  }
}

// Signing keys: kept in --jwks across restarts, so tokens issued before a
// restart still verify. One key per algorithm of --signing-algs, the RS256
// one first: oidc-provider signs with the first key that fits the alg.
const signingAlgs = splitList(args['signing-algs']);
const keyKinds = {
  RS256: () => [crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }), 'RS256'],
  PS256: () => [crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }), 'PS256'],
  ES256: () => [crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }), 'ES256'],
  // No alg: an Ed25519 key signs for both EdDSA and Ed25519 (RFC 9864).
  EdDSA: () => [crypto.generateKeyPairSync('ed25519'), undefined],
};
for (const alg of signingAlgs) {
  if (!Object.hasOwn(keyKinds, alg)) {
    fail(`--signing-algs: unknown algorithm ${alg} (want RS256, PS256, ES256 or EdDSA)`);
  }
}

// newKeys are a new signing key (private JWK) for each of signingAlgs.
function newKeys() {
  return signingAlgs.map((alg) => {
    const [{ privateKey }, jwkAlg] = keyKinds[alg]();
    const jwk = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig' };
    if (jwkAlg) jwk.alg = jwkAlg;
    return jwk;
  });
}

function saveKeys(file, jwks) {
  if (file) {
    fs.writeFileSync(file, JSON.stringify(jwks), { mode: 0o600 });
  }
}

let signingKeys;

function loadKeys(file) {
  if (file && fs.existsSync(file)) {
    signingKeys = JSON.parse(fs.readFileSync(file, 'utf8'));
    return structuredClone(signingKeys);
  }
  signingKeys = { keys: newKeys() };
  saveKeys(file, signingKeys);
  return structuredClone(signingKeys);
}

// rotateKeys puts a new key for each algorithm before the keys held (the
// first that fits an alg signs), and has the provider sign and publish
// with the set.
async function rotateKeys(alg, keepKid) {
  if (alg) {
    if (!['RS256', 'PS256', 'ES256'].includes(alg)) {
      throw new Error(`rotate-keys: alg must be RS256, PS256 or ES256, got ${alg}`);
    }
    signingAlgs.splice(0, signingAlgs.length, alg);
  }
  const fresh = newKeys();
  if (keepKid) {
    // A constant kid that the IdP's administrator configured: each new key
    // takes the kid of the key of its kind it replaces, which is no longer
    // published (a kid names one key).
    for (const k of fresh) {
      const old = signingKeys.keys.find((o) => o.kty === k.kty && o.alg === k.alg);
      if (old) k.kid = old.kid;
    }
    signingKeys = { keys: [...fresh, ...signingKeys.keys.filter((o) => !fresh.some((k) => k.kid === o.kid))] };
  } else {
    signingKeys = { keys: [...fresh, ...signingKeys.keys] };
  }
  saveKeys(args.jwks, signingKeys);
  initializeKeystore.call(provider, structuredClone(signingKeys));
  if (alg) {
    // The clients' registered alg is what oidc-provider signs with; Hydra
    // has none per client and signs with its newest key.
    for (const c of [client, ...extraClients]) {
      (await provider.Client.find(c.client_id)).idTokenSignedResponseAlg = alg;
    }
  }
  return fresh.map((k) => k.kid);
}

const authMethod = args['client-secret'] === '' ? 'none' : args['auth-method'];
if (!['client_secret_basic', 'client_secret_post', 'none'].includes(authMethod)) {
  fail(`--auth-method must be client_secret_basic or client_secret_post, got ${authMethod}`);
}
const pkceRequired = flag('pkce-required');
const conformIdTokenClaims = flag('conform-id-token-claims');

const client = {
  client_id: args['client-id'],
  redirect_uris: args['redirect-uri'],
  post_logout_redirect_uris: args['post-logout-redirect-uri'],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: authMethod,
};
if (authMethod !== 'none') {
  client.client_secret = args['client-secret'];
}
if (args['backchannel-logout-uri']) {
  client.backchannel_logout_uri = args['backchannel-logout-uri'];
  client.backchannel_logout_session_required = flag('backchannel-logout-session-required');
}
if (client.redirect_uris.length === 0) {
  fail('at least one --redirect-uri is required');
}

// More clients, from --clients, and how the provider treats each (x_ keys).
const behaviour = {};
const extraClients = (args.clients ? JSON.parse(fs.readFileSync(args.clients, 'utf8')) : []).map((c) => {
  const meta = {
    grant_types: client.grant_types,
    response_types: client.response_types,
    token_endpoint_auth_method: authMethod,
    ...(authMethod !== 'none' ? { client_secret: client.client_secret } : {}),
  };
  const knobs = {};
  for (const [k, v] of Object.entries(c)) {
    if (k.startsWith('x_')) knobs[k] = v;
    else meta[k] = v;
  }
  if (!meta.client_id || !meta.redirect_uris?.length) {
    fail('--clients: every client needs client_id and redirect_uris');
  }
  if (![undefined, 'always', 'never'].includes(knobs.x_refresh_tokens)) {
    fail(`--clients: ${meta.client_id}: x_refresh_tokens must be always or never, got ${knobs.x_refresh_tokens}`);
  }
  behaviour[meta.client_id] = {
    userinfoOnly: knobs.x_userinfo_only || [],
    refreshTokens: knobs.x_refresh_tokens,
    rotate: knobs.x_rotate_refresh_tokens !== false,
    refreshIdToken: knobs.x_refresh_id_token !== false,
  };
  return meta;
});
const behaviourOf = (clientId) => behaviour[clientId] || { userinfoOnly: [], rotate: true, refreshIdToken: true };
const anyClient = (pred) => extraClients.some(pred);
// Only what some client asks for is switched on, so that with no --clients
// the discovery document stays oidc-provider's default.
const pairwise = anyClient((c) => c.subject_type === 'pairwise');
const jwtUserinfo = anyClient((c) => c.userinfo_signed_response_alg);
const idTokenAlgs = ['RS256', 'PS256', 'ES256', 'Ed25519', 'EdDSA'];
for (const c of extraClients) {
  const alg = c.id_token_signed_response_alg;
  if (alg && !idTokenAlgs.includes(alg)) idTokenAlgs.push(alg); // HS256: keyed with the client secret
}
// Fixed, so that a restarted provider names its users alike.
const pairwiseSalt = 'portcullis-test';

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(uid, error, username = '') {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Test IdP login</title></head>
<body>
<h1>Test IdP</h1>
${error ? `<p class="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}" autocomplete="off">
<input type="text" name="username" value="${esc(username)}" placeholder="username" autofocus>
<input type="password" name="password" placeholder="password">
<button type="submit" name="login" value="yes">Sign in</button>
<button type="submit" name="abort" value="yes">Cancel</button>
</form>
</body></html>`;
}

function send(res, status, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 64 * 1024) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

// ensureGrant grants everything the client asked for, so consent is never shown.
async function ensureGrant(provider, grantId, accountId, clientId, scope, claims) {
  const grant = (grantId && await provider.Grant.find(grantId))
    || new provider.Grant({ accountId, clientId });
  if (scope) grant.addOIDCScope(scope);
  if (claims?.length) grant.addOIDCClaims(claims);
  await grant.save();
  return grant;
}

async function interaction(provider, req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    return send(res, 400, 'interaction mismatch');
  }
  const { prompt, params, session } = details;

  if (prompt.name === 'consent') {
    // Only reached with prompt=consent (e.g. for offline_access).
    const grant = await ensureGrant(provider, details.grantId, session.accountId, params.client_id, params.scope,
      prompt.details.missingOIDCClaims);
    return provider.interactionFinished(req, res, { consent: { grantId: grant.jti } }, { mergeWithLastSubmission: true });
  }

  if (req.method === 'GET') {
    return send(res, 200, loginPage(uid));
  }
  const form = await readForm(req);
  if (form.has('abort')) {
    return provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }
  const username = form.get('username') || '';
  const user = Object.hasOwn(users, username) ? users[username] : undefined;
  if (!user || user.password !== form.get('password')) {
    return send(res, 200, loginPage(uid, 'Invalid username or password.', username));
  }
  const login = { accountId: username };
  const amr = splitList(args.amr);
  if (amr.length) login.amr = amr;
  if (args.acr) login.acr = args.acr;
  return provider.interactionFinished(req, res, { login }, { mergeWithLastSubmission: false });
}

let provider;
let tokenRequests = 0;
const server = http.createServer(async (req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  if (req.method === 'POST' && path === '/token') {
    tokenRequests++;
  }
  if (req.method === 'GET' && path === '/test/token-requests') {
    res.setHeader('Content-Type', 'application/json');
    return res.end(JSON.stringify({ count: tokenRequests }));
  }
  if (req.method === 'POST' && path === '/test/rotate-keys') {
    try {
      const q = new URL(req.url, 'http://x').searchParams;
      const kids = await rotateKeys(q.get('alg'), q.get('keep_kid') === '1');
      res.setHeader('Content-Type', 'application/json');
      return res.end(JSON.stringify({ kids }));
    } catch (err) {
      return send(res, 400, esc(err.message));
    }
  }
  const m = /^\/interaction\/([A-Za-z0-9_-]+)$/.exec(path);
  if (!m) {
    return provider.callback()(req, res);
  }
  try {
    await interaction(provider, req, res, m[1]);
  } catch (err) {
    console.error('interaction:', err);
    if (!res.headersSent) send(res, 400, esc(err.message));
  }
});

server.listen(Number(args.port), args.host, () => {
  const { port } = server.address();
  const issuer = `http://${args.host}:${port}${args['issuer-trailing-slash'] ? '/' : ''}`;
  provider = new Provider(issuer, {
    clients: [client, ...extraClients],
    jwks: loadKeys(args.jwks),
    cookies: {
      keys: [crypto.randomBytes(32).toString('base64')],
    },
    claims: standardClaims,
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    conformIdTokenClaims,
    async findAccount(ctx, sub) {
      const user = Object.hasOwn(users, sub) ? users[sub] : undefined;
      if (!user) return undefined;
      return {
        accountId: sub,
        async claims(use) {
          const { password, ...claims } = user;
          if (use === 'id_token') {
            for (const k of behaviourOf(ctx.oidc.client?.clientId).userinfoOnly) delete claims[k];
          }
          return { preferred_username: sub, ...claims, sub: user.sub || sub };
        },
      };
    },
    async loadExistingGrant(ctx) {
      const { oidc } = ctx;
      const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
      return ensureGrant(oidc.provider, grantId, oidc.session.accountId, oidc.client.clientId,
        oidc.params.scope, [...(oidc.requestParamClaims || [])]);
    },
    // Public clients always need PKCE (oidc-provider's own rule).
    pkce: { required: (ctx, c) => pkceRequired || c.clientAuthMethod === 'none' },
    rotateRefreshToken: (ctx) => behaviourOf(ctx.oidc.client.clientId).rotate,
    async issueRefreshToken(ctx, c, code) {
      switch (behaviourOf(c.clientId).refreshTokens) {
        case 'always': return c.grantTypeAllowed('refresh_token');
        case 'never': return false;
        default: return c.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
      }
    },
    ...(pairwise ? {
      subjectTypes: ['public', 'pairwise'],
      // Per sector (the host of the client's redirect URIs) and user, stable across
      // logins, as OIDC Core 8.1 asks.
      pairwiseIdentifier: async (ctx, accountId, c) => crypto.createHash('sha256')
        .update(`${c.sectorIdentifier}|${accountId}|${pairwiseSalt}`).digest('hex'),
    } : {}),
    ...(idTokenAlgs.length > 5 ? { enabledJWA: { idTokenSigningAlgValues: idTokenAlgs } } : {}),
    ...(args['id-token-ttl'] ? { ttl: { IdToken: Number(args['id-token-ttl']) } } : {}),
    // oidc-provider refuses outgoing requests to loopback and private
    // addresses (SSRF protection); in tests the back-channel logout URI is
    // a proxy on 127.0.0.1.
    fetch: (url, options) => {
      delete options.dispatcher;
      return globalThis.fetch(url, options);
    },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: {
        enabled: flag('rp-initiated-logout'),
        async logoutSource(ctx, form) {
          ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Logout</title></head><body>
${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>
</body></html>`;
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = '<!DOCTYPE html><html><body><h1>Signed out</h1></body></html>';
        },
      },
      backchannelLogout: { enabled: true },
      jwtUserinfo: { enabled: jwtUserinfo },
    },
    renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><html><body><h1>Error</h1><pre>${esc(JSON.stringify(out))}</pre></body></html>`;
    },
  });
  // oidc-provider takes client_secret_basic and client_secret_post as one
  // another; some real IdPs do not, and tests must be able to tell them apart.
  const clientAuthRefused = (ctx, description) => {
    if (args['client-auth-error'] === 'unauthorized_client') {
      ctx.status = 403;
      ctx.body = { error: 'unauthorized_client' };
    } else {
      ctx.status = 401;
      ctx.body = { error: 'invalid_client', error_description: description };
    }
  };
  provider.use(async (ctx, next) => {
    if (ctx.method === 'POST' && ctx.path === '/token' && authMethod !== 'none') {
      const basic = ctx.get('authorization') !== '';
      if (basic !== (authMethod === 'client_secret_basic')) {
        clientAuthRefused(ctx, `client must authenticate with ${authMethod}`);
        return;
      }
    }
    await next();
    if (ctx.method === 'POST' && ctx.path === '/token' && ctx.body?.error === 'invalid_client') {
      clientAuthRefused(ctx, ctx.body.error_description);
    }
    if (ctx.method === 'POST' && ctx.path === '/token' && ctx.body?.error === 'invalid_grant'
      && ctx.oidc?.params?.grant_type === 'authorization_code' && args['code-error'] === 'invalid_code') {
      ctx.status = 403;
      ctx.body = { error: 'invalid_code' };
    }
    if (ctx.method === 'POST' && ctx.path === '/token' && ctx.body?.error === 'invalid_grant'
      && ctx.oidc?.params?.grant_type === 'refresh_token' && args['refresh-error'] === 'invalid_request') {
      ctx.status = 400;
      ctx.body = {
        error: 'invalid_request',
        error_description: 'Refresh token is invalid or has already been claimed by another client.',
      };
    }
    if (ctx.method === 'POST' && ctx.path === '/token' && ctx.oidc?.params?.grant_type === 'refresh_token'
      && ctx.status === 200 && ctx.body && !behaviourOf(ctx.oidc.client?.clientId).refreshIdToken) {
      delete ctx.body.id_token;
    }
  });
  provider.on('server_error', (ctx, err) => console.error('server_error:', err));
  console.log(`READY ${issuer}`);
});

// With --watch-stdin the provider exits when its parent (a Go test) goes away
// and its end of the pipe closes.
if (args['watch-stdin']) {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}
