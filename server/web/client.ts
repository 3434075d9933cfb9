/**
 * The web pages' client at the identity provider: `pigeon-web`, a first-party confidential client the SERVER uses
 * (backend-for-frontend). The browser only ever sees the authorization redirect; the code exchange, refreshes and
 * revocation are made by the server with a secret derived from the server secret, so every node knows it and none
 * stores it.
 */
import crypto from 'node:crypto';

export const WEB_CLIENT_ID = 'pigeon-web';
export const WEB_CALLBACK_PATH = '/web/callback';

/** The client secret: a derivation of the server secret, never written anywhere. */
export function webClientSecret(serverSecret: Buffer): string {
  return Buffer.from(crypto.hkdfSync('sha256', serverSecret, Buffer.alloc(0), 'pigeon web: client secret v1', 32)).toString('base64url');
}

/** oidc-provider client metadata for the web pages (registered in identity/provider.ts). */
export function webClientMetadata(issuer: string, serverSecret: Buffer) {
  return {
    client_id: WEB_CLIENT_ID,
    client_secret: webClientSecret(serverSecret),
    client_name: 'Pigeon web',
    application_type: 'web' as const,
    token_endpoint_auth_method: 'client_secret_post' as const,
    redirect_uris: [`${issuer}${WEB_CALLBACK_PATH}`],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code' as const],
    id_token_signed_response_alg: 'EdDSA' as const,
  };
}
