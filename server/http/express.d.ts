import type { AuthContext } from '../auth/authenticate';

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** The request id: the client's sane `X-Request-Id`, or a fresh one. */
      id: string;
      /** Set by the authentication middleware on protected routes. */
      auth?: AuthContext;
    }
  }
}

export {};
