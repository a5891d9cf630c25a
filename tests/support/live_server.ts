/**
 * The real app served over real HTTP on 127.0.0.1 and a random port, for clients that need a socket
 * (a browser, newman). Wraps `createHarness()`; call `close()` in `after()`.
 */
import { createHarness, type Harness } from "./harness.ts";

export interface LiveServer {
  harness: Harness;
  port: number;
  /** `http://127.0.0.1:<port>`, no trailing slash. */
  baseUrl: string;
  close(): Promise<void>;
}

/**
 * Serve the app. `onRequest`, if given, sees every request the server receives, before the app answers, so
 * a test can check what a client really sent (method, URL, headers: it must not read the body).
 */
export function startLiveServer(options: { onRequest?: (request: Request) => void } = {}): LiveServer {
  const harness = createHarness();
  const handler = options.onRequest
    ? (request: Request) => {
      options.onRequest!(request);
      return harness.app.fetch(request);
    }
    : harness.app.fetch;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, handler);
  const port = server.addr.port;
  return {
    harness,
    port,
    baseUrl: `http://127.0.0.1:${port}`,
    async close() {
      await server.shutdown();
      await harness.close();
    },
  };
}
