/**
 * Security headers: `X-Content-Type-Options: nosniff` on every answer, `Cache-Control: no-store` on every API
 * answer (tokens, balances and histories must not stay in a browser's or a proxy's cache), and on the Swagger UI
 * page a Content-Security-Policy that allows only the service's own files and forbids framing (clickjacking).
 */
import { secureHeaders } from "hono/secure-headers";

/** secureHeaders with every default header off, so each use names the headers it sends. */
const NONE = {
  crossOriginResourcePolicy: false,
  crossOriginOpenerPolicy: false,
  originAgentCluster: false,
  referrerPolicy: false,
  strictTransportSecurity: false,
  xContentTypeOptions: false,
  xDnsPrefetchControl: false,
  xDownloadOptions: false,
  xFrameOptions: false,
  xPermittedCrossDomainPolicies: false,
  xXssProtection: false,
} as const;

/**
 * Every answer, whatever path and status: no content sniffing; under /api/ never stored by a cache. Called by
 * the request telemetry middleware on each answer (one middleware layer for all of it).
 */
export function setAnswerHeaders(headers: Headers, path: string): void {
  headers.set("X-Content-Type-Options", "nosniff");
  if (path.startsWith("/api/")) headers.set("Cache-Control", "no-store");
}

/**
 * The Swagger UI page and its files: scripts, styles, images and requests only from the service itself (the
 * page works offline), no plugins, no framing by any page, and no referrer sent with the requests it makes.
 */
export const swaggerHeaders = secureHeaders({
  ...NONE,
  contentSecurityPolicy: {
    defaultSrc: ["'none'"],
    scriptSrc: ["'self'"],
    // Swagger UI sets style attributes on its elements
    styleSrc: ["'self'", "'unsafe-inline'"],
    imgSrc: ["'self'", "data:"],
    connectSrc: ["'self'"],
    fontSrc: ["'self'"],
    formAction: ["'self'"],
    baseUri: ["'none'"],
    objectSrc: ["'none'"],
    frameAncestors: ["'none'"],
  },
  xFrameOptions: "DENY",
  referrerPolicy: "no-referrer",
});
