/**
 * oidc-provider, loaded once for the identity provider. It ships ES modules only; Node (>= 20.19) loads it with
 * require(), and TypeScript is told the types come from its ES-module side.
 */
export type Oidc = typeof import('oidc-provider', { with: { 'resolution-mode': 'import' } });
export type {
  Adapter,
  AdapterPayload,
  Configuration,
  KoaContextWithOIDC,
  Provider,
  Interaction,
  errors as OidcErrors,
} from 'oidc-provider' with { 'resolution-mode': 'import' };

/**
 * The library. On Node 20 it prints "Unsupported runtime" once as it loads: Pigeon supports Node 20.19 and later,
 * where it loads and runs (require() of ES modules; the whole suite runs on 20 and on 26), so that one line is not
 * passed on to the console. Everything else it says is.
 */
export function loadOidc(): Oidc {
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].includes('oidc-provider WARNING: Unsupported runtime')) return;
    warn(...args);
  };
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('oidc-provider') as Oidc;
  } finally {
    console.warn = warn;
  }
}
