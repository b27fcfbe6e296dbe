// Local OpenID Provider (panva/oidc-provider 9.x) for pkce_middleware's demo and tests.
// Loopback only: it always binds 127.0.0.1, whatever the issuer says.
//
// Configuration: ONE JSON object in the env var OP_CONFIG, keys:
//   port                 int, required. Port to listen on (127.0.0.1).
//   issuer               string, default "http://127.0.0.1:<port>".
//   clients              list of client metadata objects handed unchanged to oidc-provider
//                        (client_id, client_secret or token_endpoint_auth_method "none",
//                        redirect_uris, post_logout_redirect_uris, grant_types,
//                        backchannel_logout_uri, ...). Default [].
//   ttl                  object of seconds for any of AccessToken, ClientCredentials (access
//                        tokens of that grant), IdToken, RefreshToken, AuthorizationCode, Session,
//                        Interaction, Grant. Absent keys keep oidc-provider's defaults (AccessToken
//                        1 h, ClientCredentials 10 min, ...). A resource server's accessTokenTTL
//                        wins over both for its tokens.
//   conformIdTokenClaims bool, default false (the ID token then carries name/email/
//                        preferred_username too, not only userinfo).
//   backchannelLogout    bool, default true: enables features.backchannelLogout and lets the
//                        logout tokens reach 127.0.0.1 (oidc-provider's SSRF guard would drop them).
//   refreshTokens        bool, default true: a refresh token is issued whenever the client has
//                        the refresh_token grant, with or without offline_access/prompt=consent.
//                        false keeps oidc-provider's own rule (offline_access scope needed).
//   rotateRefreshToken   bool, optional: force rotation on (true) or off (false); absent keeps
//                        oidc-provider's default (public clients always, confidential after 70 %
//                        of the TTL).
//   accounts             object, default {}: account id (the user name typed in the login form) ->
//                        object of claim overrides, merged key by key over that user's default
//                        claims (sub, preferred_username, name, email "<id>@example.test",
//                        email_verified true). A null value removes the claim; other values replace
//                        it whole (nested objects are not merged). `sub` cannot be overridden.
//                        The key `acr` is not a claim: it is the ACR of that user's logins (a
//                        string, or null for none). Users not listed keep the defaults.
//                        E.g. {"uma": {"email_verified": false},
//                              "gina": {"groups": ["admins"], "realm_access": {"roles": ["admin"]}},
//                              "nomail": {"email": null, "email_verified": null},
//                              "mia": {"acr": "urn:test:mfa"}}
//   acrValues            list of strings, default []: oidc-provider's acrValues, so discovery lists
//                        them as acr_values_supported. The first entry is the ACR of every login
//                        whose user has no `acr` override; empty means those logins carry no acr.
//   resourceServers      object, default {}: the protected APIs this provider issues access tokens
//                        for (RFC 8707 resource indicators). Key: the resource indicator, an absolute
//                        URL without fragment (e.g. "http://127.0.0.1:8123/" or
//                        "https://api.test/mcp"), matched byte for byte against the `resource`
//                        parameter (no normalisation: "http://h:1" and "http://h:1/" are two
//                        resources). Value: {
//                          "scope": "api:read api:write"  the RS's scopes (space separated,
//                                                          default ""); a token for the resource
//                                                          carries the requested ones among them,
//                          "accessTokenFormat": "jwt" | "opaque"  default "jwt",
//                          "accessTokenTTL": seconds      optional; wins over ttl.AccessToken /
//                                                          ttl.ClientCredentials for this resource,
//                          "jwtAlg": "RS256" | "ES256"    JWT signing alg, default RS256 }.
//                        The token's `aud` is the indicator. A resource not listed here is refused
//                        with invalid_target, at the authorization endpoint (redirected back to the
//                        client) and at the token endpoint (400). `resource` works on authorization
//                        requests, authorization_code / refresh_token token requests and
//                        client_credentials; a code or refresh token granted for one resource
//                        yields an access token for it without repeating `resource`
//                        (useGrantedResource), so such a login's access tokens are for the resource
//                        only, never for userinfo. Without `resource` nothing changes: access tokens
//                        stay opaque, for userinfo only.
//                        RS scopes are NOT added to `scopes` (scopes_supported): oidc-provider grants
//                        them per resource through the consent prompt, and its docs say resource
//                        server scopes do not belong there.
//   dpopNonces           bool, default false: DPoP nonces (RFC 9449 section 8) at the token
//                        endpoint. Off: proofs need only a recent iat (+-300 s) and a proof that
//                        carries a nonce is refused. On: every token request with a DPoP proof must
//                        carry a server nonce; the first attempt gets 400 use_dpop_nonce with a
//                        DPoP-Nonce header to retry with.
//
// OAuth 2.0 authorization server features, always on (they only add endpoints and a grant type):
//   * client_credentials grant (clients with grant_types ["client_credentials"]; such a client
//     needs response_types [] and no redirect_uris);
//   * introspection (RFC 7662) at introspection_endpoint. oidc-provider's allowedPolicy: a
//     confidential client may introspect any client's token, a public one only its own. Answer
//     for a live token: active, client_id, exp, iat, iss, jti, aud, scope, token_type ("Bearer" or
//     "DPoP"), sub (the user; for client_credentials tokens the client id, added here through
//     extraTokenClaims so it matches the JWT form), sid (user tokens), cnf {"jkt"} when
//     DPoP-bound; otherwise {"active": false}. JWT access tokens are not stored by oidc-provider,
//     so they cannot be introspected or revoked: 400 unsupported_token_type;
//   * revocation (RFC 7009) at revocation_endpoint; oidc-provider lets a client revoke only its
//     own tokens (another client's: 400 invalid_request);
//   * DPoP (RFC 9449; oidc-provider enables it by default): a token request with a valid `DPoP`
//     proof (ES256, Ed25519/EdDSA) gets token_type "DPoP"; JWT access tokens then carry
//     cnf.jkt, introspection shows cnf.jkt. Nonces: see dpopNonces.
// JWT access tokens (RFC 9068): header typ "at+jwt", alg (jwtAlg), kid of a key in jwks_uri;
// claims iss, aud (the indicator), sub, client_id, iat, exp, jti, scope (when any), cnf.jkt when
// DPoP-bound. sub is the user name for user grants and the client id for client_credentials
// (oidc-provider: `sub: accountId || clientId`). No auth_time/acr/amr.
//
// Scopes: openid, profile (name, preferred_username), email (email, email_verified),
// offline_access, and groups (groups, realm_access, resource_access; only claims the account has,
// so none by default). With conformIdTokenClaims false the ID token carries the claims of every
// granted scope.
//
// ID tokens always carry auth_time: clients that do not say require_auth_time get true (via
// oidc-provider's clientDefaults), because oidc-provider otherwise adds it only for max_age or
// prompt=login requests and tests compare it across logins. acr is in the ID token whenever the
// login has one (see accounts/acrValues), asked for with acr_values or not; never in userinfo.
//
// Env OP_EXIT_ON_STDIN_EOF=1 (optional): exit when stdin reaches EOF, i.e. when the parent that
// holds the pipe dies.
//
// Output on stdout, one line each, for tests to grep:
//   OP READY <issuer>
//   OPLOG <METHOD> <path-without-query> <status>
//   OPLOG grant <grant_type> <client_id> <ok|error code>
//   OPLOG event <event name> <details...>
//   OPLOG authorize <client_id> prompt=<prompt> max_age=<max_age> acr_values=<acr_values>
//     one per request to the authorization endpoint (GET only: enableHttpPostMethods is off), with
//     the parameters as sent in its query string, before client defaults; "-" when absent or
//     empty. Not resolved from request objects or pushed requests.
//   OPLOG introspection <client_id> <true|false|error code>
//     one per POST to the introspection endpoint: the client the request named (authenticated or
//     not; "-" when it named none or an unknown one) and the answer's `active`, or the error
//     (e.g. invalid_client, unsupported_token_type for a JWT).
//   OPLOG revocation <client_id> <ok|error code>
//     one per POST to the revocation endpoint ("ok" also for unknown tokens: RFC 7009 answers 200).
// oidc-provider's own NOTICE/WARNING lines also appear (stdout/stderr) and can be ignored.
//
// Users: devInteractions login form, any user name + any password; the user name becomes `sub`
// (claims: see `accounts`).

import * as crypto from 'node:crypto';
import * as http from 'node:http';

// oidc-provider 9 warns "Unsupported runtime" on Node 20 at import time, yet works; the warning is
// noise in every test log. A static import would run before any code here, so import dynamically
// with console.warn filtered for exactly that message.
const originalWarn = console.warn;
console.warn = (...args) => {
  if (typeof args[0] === 'string' && args[0].includes('Unsupported runtime')) return;
  originalWarn(...args);
};
const { default: Provider, errors } = await import('oidc-provider');
console.warn = originalWarn;

function fail(message) {
  console.error(`OP CONFIG ERROR: ${message}`);
  process.exit(2);
}

let config;
try {
  config = JSON.parse(process.env.OP_CONFIG ?? '');
} catch (err) {
  fail(`OP_CONFIG must be a JSON object (${err.message})`);
}
if (config === null || typeof config !== 'object' || Array.isArray(config)) {
  fail('OP_CONFIG must be a JSON object');
}
const KNOWN_KEYS = new Set([
  'port', 'issuer', 'clients', 'ttl', 'conformIdTokenClaims', 'backchannelLogout', 'refreshTokens',
  'rotateRefreshToken', 'accounts', 'acrValues', 'resourceServers', 'dpopNonces',
]);
for (const key of Object.keys(config)) {
  // A misspelt option would otherwise be ignored silently and a test would probe the wrong setup.
  if (!KNOWN_KEYS.has(key)) fail(`unknown OP_CONFIG key ${JSON.stringify(key)}`);
}
const port = config.port;
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  fail('OP_CONFIG.port must be an integer in 1..65535');
}
const issuer = config.issuer ?? `http://127.0.0.1:${port}`;
const clients = config.clients ?? [];
if (!Array.isArray(clients)) fail('OP_CONFIG.clients must be a list');
const backchannelLogout = config.backchannelLogout ?? true;
const refreshTokens = config.refreshTokens ?? true;

const isPlainObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);

const accounts = config.accounts ?? {};
if (!isPlainObject(accounts)) fail('OP_CONFIG.accounts must be an object');
for (const [id, overrides] of Object.entries(accounts)) {
  if (!isPlainObject(overrides)) fail(`OP_CONFIG.accounts.${id} must be an object of claims`);
  // getCtxAccountClaims puts the account id into sub anyway; an override would only mislead.
  if ('sub' in overrides) fail(`OP_CONFIG.accounts.${id}.sub: sub is the account id, it cannot be overridden`);
  if ('acr' in overrides && overrides.acr !== null && (typeof overrides.acr !== 'string' || !overrides.acr)) {
    fail(`OP_CONFIG.accounts.${id}.acr must be a non-empty string or null`);
  }
}
const acrValues = config.acrValues ?? [];
if (!Array.isArray(acrValues) || !acrValues.every((value) => typeof value === 'string' && value)) {
  fail('OP_CONFIG.acrValues must be a list of non-empty strings');
}

const resourceServers = config.resourceServers ?? {};
if (!isPlainObject(resourceServers)) fail('OP_CONFIG.resourceServers must be an object');
const RESOURCE_SERVER_KEYS = new Set(['scope', 'accessTokenFormat', 'accessTokenTTL', 'jwtAlg']);
const JWT_ALGS = new Set(['RS256', 'ES256']); // the algs of the keys signingKeys() makes
for (const [indicator, info] of Object.entries(resourceServers)) {
  const where = `OP_CONFIG.resourceServers[${JSON.stringify(indicator)}]`;
  // The same test oidc-provider applies to the `resource` parameter, so a listed indicator can be asked for.
  if (!URL.parse(indicator) || indicator.includes('#')) fail(`${where}: the key must be an absolute URL without fragment`);
  if (!isPlainObject(info)) fail(`${where} must be an object`);
  for (const key of Object.keys(info)) {
    if (!RESOURCE_SERVER_KEYS.has(key)) fail(`${where}: unknown key ${JSON.stringify(key)}`);
  }
  if (info.scope !== undefined && typeof info.scope !== 'string') fail(`${where}.scope must be a string`);
  if (info.accessTokenFormat !== undefined && !['jwt', 'opaque'].includes(info.accessTokenFormat)) {
    fail(`${where}.accessTokenFormat must be "jwt" or "opaque"`);
  }
  if (info.accessTokenTTL !== undefined && (!Number.isInteger(info.accessTokenTTL) || info.accessTokenTTL <= 0)) {
    fail(`${where}.accessTokenTTL must be a positive integer`);
  }
  if (info.jwtAlg !== undefined && !JWT_ALGS.has(info.jwtAlg)) fail(`${where}.jwtAlg must be RS256 or ES256`);
  if (info.jwtAlg !== undefined && info.accessTokenFormat === 'opaque') fail(`${where}.jwtAlg needs accessTokenFormat "jwt"`);
}
const dpopNonces = config.dpopNonces ?? false;
if (typeof dpopNonces !== 'boolean') fail('OP_CONFIG.dpopNonces must be a boolean');

function resourceServerInfo(indicator) {
  // hasOwn, not `in`: "constructor" or "__proto__" must not name a resource server.
  if (!Object.hasOwn(resourceServers, indicator)) throw new errors.InvalidTarget();
  const info = resourceServers[indicator];
  const format = info.accessTokenFormat ?? 'jwt';
  return {
    audience: indicator,
    scope: info.scope ?? '',
    accessTokenFormat: format,
    ...(info.accessTokenTTL !== undefined ? { accessTokenTTL: info.accessTokenTTL } : {}),
    ...(format === 'jwt' ? { jwt: { sign: { alg: info.jwtAlg ?? 'RS256' } } } : {}),
  };
}

function overridesFor(accountId) {
  return Object.hasOwn(accounts, accountId) ? accounts[accountId] : {};
}

function acrFor(accountId) {
  const overrides = overridesFor(accountId);
  if (Object.hasOwn(overrides, 'acr')) return overrides.acr ?? undefined;
  return acrValues[0];
}

function claimsFor(accountId) {
  const claims = {
    sub: accountId,
    preferred_username: accountId,
    name: `${accountId} (test user)`,
    email: `${accountId}@example.test`,
    email_verified: true,
  };
  for (const [name, value] of Object.entries(overridesFor(accountId))) {
    if (value === null) delete claims[name];
    else claims[name] = value;
  }
  // The ACR belongs to the login (session), not the account; IdToken takes it from there.
  delete claims.acr;
  return claims;
}

// oidc-provider puts acr into an ID token only when its claim mask asks for it, which without
// this happens only when the request names acr_values or claims. Listing it under openid makes
// every login's acr show; only when some login can have one, so claims_supported stays honest.
const acrPossible = acrValues.length > 0 || Object.values(accounts).some((o) => typeof o.acr === 'string');

const TTL_KEYS = new Set([
  'AccessToken', 'ClientCredentials', 'IdToken', 'RefreshToken', 'AuthorizationCode', 'Session', 'Interaction', 'Grant',
]);
const ttl = {};
for (const [name, seconds] of Object.entries(config.ttl ?? {})) {
  if (!TTL_KEYS.has(name)) fail(`OP_CONFIG.ttl.${name} is not supported`);
  if (!Number.isInteger(seconds) || seconds <= 0) fail(`OP_CONFIG.ttl.${name} must be a positive integer`);
  ttl[name] = seconds;
}
// A resource server's accessTokenTTL must win over a fixed ttl.AccessToken/ClientCredentials (a number
// there would replace oidc-provider's function that reads it), so both become functions; without
// either setting they return oidc-provider's defaults (1 h, 10 min).
const accessTokenSeconds = ttl.AccessToken ?? 60 * 60;
const clientCredentialsSeconds = ttl.ClientCredentials ?? 10 * 60;
ttl.AccessToken = (_ctx, token) => token.resourceServer?.accessTokenTTL || accessTokenSeconds;
ttl.ClientCredentials = (_ctx, token) => token.resourceServer?.accessTokenTTL || clientCredentialsSeconds;

function signingKeys() {
  // Fresh keys per start: tests must fetch the JWKS anyway, and nothing outlives the process.
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return [
    // RS256 first: it is the default id_token_signed_response_alg.
    { ...rsa, kid: `rsa-${crypto.randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' },
    { ...ec, kid: `ec-${crypto.randomBytes(6).toString('hex')}`, alg: 'ES256', use: 'sig' },
  ];
}

function log(...parts) {
  // Spaces would break field splitting by the readers of these lines.
  const fields = parts.map((p) => String(p ?? '-').replace(/\s+/g, '_') || '-');
  process.stdout.write(`OPLOG ${fields.join(' ')}\n`);
}

const configuration = {
  clients,
  ttl,
  conformIdTokenClaims: config.conformIdTokenClaims ?? false,
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'email', 'offline_access', 'groups'],
  claims: {
    openid: acrPossible ? ['sub', 'acr'] : ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups', 'realm_access', 'resource_access'],
  },
  acrValues,
  // Merged over oidc-provider's clientDefaults, so only clients that do not say are affected.
  clientDefaults: { require_auth_time: true },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: backchannelLogout },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    dPoP: {
      enabled: true,
      ...(dpopNonces ? { nonceSecret: crypto.randomBytes(32), requireNonce: () => true } : {}),
    },
    resourceIndicators: {
      enabled: true,
      async getResourceServerInfo(_ctx, indicator) {
        return resourceServerInfo(indicator);
      },
      // A code or refresh token granted for one resource gives tokens for it even when the token
      // request repeats no `resource` and the grant has openid (oidc-provider's default would then
      // issue a userinfo-only token).
      async useGrantedResource() {
        return true;
      },
    },
  },
  // RFC 9068 wants sub in every JWT access token; oidc-provider's JWT uses the client id for
  // client_credentials tokens, and this gives opaque ones the same sub in introspection.
  async extraTokenClaims(_ctx, token) {
    return token.kind === 'ClientCredentials' ? { sub: token.clientId } : undefined;
  },
  jwks: { keys: signingKeys() },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return claimsFor(id);
      },
    };
  },
};

if (backchannelLogout) {
  // oidc-provider 9 hands fetch a `dispatcher` that destroys sockets to special-use IPs
  // (127/8 included), so logout tokens to a local app never arrive. Dropping it restores plain fetch.
  configuration.fetch = (url, options) => {
    const { dispatcher: _ssrfGuard, ...rest } = options;
    return globalThis.fetch(url, rest);
  };
}
if (refreshTokens) {
  configuration.issueRefreshToken = async (_ctx, client) => client.grantTypeAllowed('refresh_token');
}
if (typeof config.rotateRefreshToken === 'boolean') {
  configuration.rotateRefreshToken = config.rotateRefreshToken;
}

let provider;
try {
  provider = new Provider(issuer, configuration);
} catch (err) {
  fail(err.message);
}

// oidc-provider validates static client metadata lazily, on the first request naming the client;
// a typo would then surface as an obscure error mid-test. Fail at start instead.
for (const client of clients) {
  try {
    await provider.Client.find(String(client?.client_id ?? ''));
  } catch (err) {
    fail(`client ${JSON.stringify(client?.client_id)}: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}`);
  }
}

// devInteractions' login submit reports only the account id, and the session's acr comes from the
// interaction result alone, so the result is completed on its way in. interactionFinished calls
// this method through `this`, so the instance property covers it too.
const interactionResult = provider.interactionResult.bind(provider);
provider.interactionResult = (req, res, result, options) => {
  const login = result?.login;
  if (login?.accountId !== undefined && login.acr === undefined) {
    const acr = acrFor(String(login.accountId));
    if (acr !== undefined) result = { ...result, login: { ...login, acr } };
  }
  return interactionResult(req, res, result, options);
};

const AUTHORIZATION_PATH = provider.pathFor('authorization');
provider.use(async (ctx, next) => {
  if (ctx.path === AUTHORIZATION_PATH) {
    // The raw query, not ctx.oidc.params: those already hold the client's default_max_age and
    // default_acr_values, and tests want to see what the relying party itself asked for.
    const sent = ctx.query;
    const field = (name) => `${name}=${sent[name] || '-'}`;
    log('authorize', sent.client_id || '-', field('prompt'), field('max_age'), field('acr_values'));
  }
  await next();
});

const INTROSPECTION_PATH = provider.pathFor('introspection');
const REVOCATION_PATH = provider.pathFor('revocation');
provider.use(async (ctx, next) => {
  await next();
  if (ctx.method !== 'POST') return;
  // After next(): oidc-provider's error handler has rendered any error into ctx.body by now, and
  // ctx.oidc.client is set once the request named a known client (even if its secret was wrong).
  if (ctx.path === INTROSPECTION_PATH) {
    const body = isPlainObject(ctx.body) ? ctx.body : {};
    const outcome = typeof body.active === 'boolean' ? String(body.active) : (body.error ?? `http_${ctx.status}`);
    log('introspection', ctx.oidc?.client?.clientId, outcome);
  } else if (ctx.path === REVOCATION_PATH) {
    const body = isPlainObject(ctx.body) ? ctx.body : {};
    log('revocation', ctx.oidc?.client?.clientId, ctx.status === 200 ? 'ok' : (body.error ?? `http_${ctx.status}`));
  }
});

// Every built-in page (login, consent, logout, errors) @imports a Google web font; offline
// browsers would wait on it, so it is cut from string bodies on the way out.
const GOOGLE_FONT_IMPORT = /@import url\(https:\/\/fonts\.googleapis\.com\/[^)]*\);?/g;
provider.use(async (ctx, next) => {
  await next();
  if (typeof ctx.body === 'string' && ctx.body.includes('fonts.googleapis.com')) {
    ctx.body = ctx.body.replace(GOOGLE_FONT_IMPORT, '');
  }
});

function grantFields(ctx) {
  // On grant.error the client may not be authenticated yet, and params may be missing entirely.
  let grantType;
  try { grantType = ctx.oidc?.params?.grant_type; } catch { grantType = undefined; }
  return [grantType, ctx.oidc?.client?.clientId];
}

provider.on('grant.success', (ctx) => {
  const [grantType, clientId] = grantFields(ctx);
  log('grant', grantType, clientId, 'ok');
  log('event', 'grant.success', grantType, clientId);
});
provider.on('grant.error', (ctx, err) => {
  const [grantType, clientId] = grantFields(ctx);
  const code = err?.error ?? 'server_error';
  log('grant', grantType, clientId, code);
  log('event', 'grant.error', grantType, clientId, code, err?.error_description);
});
provider.on('backchannel.success', (_ctx, client, accountId, sid) => {
  log('event', 'backchannel.success', client?.clientId, accountId, sid);
});
provider.on('backchannel.error', (_ctx, err, client, accountId, sid) => {
  log('event', 'backchannel.error', client?.clientId, accountId, sid, err?.cause?.message ?? err?.message);
});
provider.on('end_session.success', (ctx) => {
  log('event', 'end_session.success', ctx.oidc?.client?.clientId);
});
provider.on('authorization.error', (_ctx, err) => {
  log('event', 'authorization.error', err?.error, err?.error_description);
});
provider.on('server_error', (_ctx, err) => {
  log('event', 'server_error', err?.message);
  console.error(err);
});

const handler = provider.callback();
const server = http.createServer((req, res) => {
  // Logged on 'finish' from the raw response: devInteractions answers some requests by writing
  // to res directly (303 after a form), so koa's ctx.status would be wrong there.
  res.on('finish', () => {
    const path = (req.url ?? '/').split('?', 1)[0];
    log(req.method, path, res.statusCode);
  });
  handler(req, res);
});

server.on('error', (err) => {
  console.error(`OP LISTEN ERROR: ${err.message}`);
  process.exit(1);
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`OP READY ${issuer}\n`);
});

// A parent that vanished closes our stdout; EPIPE then means nobody is listening, not a crash.
process.stdout.on('error', (err) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  process.stdout.write(`OP STOP ${signal}\n`);
  server.close(() => process.exit(0));
  // Keep-alive sockets from test clients would otherwise hold close() open.
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
if (process.env.OP_EXIT_ON_STDIN_EOF === '1') {
  // Set by tests/support/oidc_provider.py, which holds our stdin open: if the test process dies without
  // stopping us, EOF arrives here instead of an orphan keeping its port.
  process.stdin.on('end', () => shutdown('stdin-eof'));
  process.stdin.on('error', () => shutdown('stdin-error'));
  process.stdin.resume();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
