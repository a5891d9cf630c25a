/**
 * Access tokens: HS256 JWTs (jose) naming the customer (`sub`) and their wallet (`wid`), with issued-at and
 * expiry. Verification fixes the algorithm, so `alg: none`, HS384/HS512 or an asymmetric-key confusion is
 * refused, and bounds the lifetime: `iat` must not be in the future and `exp` must not lie past `iat` + the
 * configured lifetime, so a token minted with a leaked secret cannot be made to last for ever.
 */
import { jwtVerify, SignJWT } from "jose";

/** Who a valid token speaks for. */
export interface TokenSubject {
  customerXid: string;
  walletId: string;
}

/** Allowed clock difference between the issuer and the verifier. */
const CLOCK_LEEWAY_SECONDS = 60;
/** Ours are about 250 characters; a longer one is refused before it is decoded. */
const MAX_TOKEN_LENGTH = 4096;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface TokenService {
  issue(subject: TokenSubject): Promise<string>;
  /** The token's subject, or null when it is malformed, forged, expired or signed with another key. */
  verify(token: string): Promise<TokenSubject | null>;
}

/** How many verified tokens are remembered, so a client's next request skips the signature check. */
const VERIFIED_CACHE_SIZE = 10_000;

/** Issue and verify tokens with one shared secret. */
export function createTokenService(
  options: { secret: string; ttlSeconds: number; /** ms since epoch; tests move it */ now?: () => number },
): TokenService {
  const now = options.now ?? Date.now;
  const key = new TextEncoder().encode(options.secret);
  // token -> subject and expiry (s). A token never changes, so a verified one stays valid until it expires.
  const verified = new Map<string, { subject: TokenSubject; exp: number }>();
  return {
    issue({ customerXid, walletId }) {
      const issuedAt = Math.floor(now() / 1000);
      return new SignJWT({ wid: walletId })
        .setProtectedHeader({ alg: "HS256", typ: "JWT" })
        .setSubject(customerXid)
        .setIssuedAt(issuedAt)
        .setJti(crypto.randomUUID()) // every init gets a distinct token, even within one second
        .setExpirationTime(issuedAt + options.ttlSeconds)
        .sign(key);
    },
    async verify(token) {
      if (token.length > MAX_TOKEN_LENGTH) return null;
      const known = verified.get(token);
      if (known) {
        if (known.exp + CLOCK_LEEWAY_SECONDS > now() / 1000) return known.subject;
        verified.delete(token);
        return null;
      }
      try {
        const { payload } = await jwtVerify(token, key, {
          algorithms: ["HS256"],
          clockTolerance: CLOCK_LEEWAY_SECONDS,
          currentDate: new Date(now()),
          requiredClaims: ["sub", "exp", "iat"],
          // Refuses an iat in the future (past the leeway) or older than one lifetime.
          maxTokenAge: options.ttlSeconds,
        });
        if (payload.exp! - payload.iat! > options.ttlSeconds) return null; // e.g. exp in the year 9999
        const walletId = payload.wid;
        if (typeof payload.sub !== "string" || typeof walletId !== "string" || !UUID.test(walletId)) {
          return null;
        }
        const subject = { customerXid: payload.sub, walletId };
        if (verified.size >= VERIFIED_CACHE_SIZE) verified.delete(verified.keys().next().value!); // oldest first
        verified.set(token, { subject, exp: payload.exp! });
        return subject;
      } catch {
        return null;
      }
    },
  };
}
