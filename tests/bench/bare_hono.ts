/**
 * The baseline of scenario 1: a bare Hono app on Deno.serve answering every GET with a small JSON of the
 * same shape as GET /api/v1/wallet, with no auth, no cache and no database.
 *
 * Run: `deno run --allow-net tests/bench/bare_hono.ts <port>`
 */
import { Hono } from "hono";

const port = Number(Deno.args[0] ?? 18090);
const wallet = {
  id: "6ef3a2f4-1d2b-4c57-9d6e-2b1f0c9a8e11",
  owned_by: "bench-1",
  status: "enabled",
  enabled_at: "2026-01-01T00:00:00.000Z",
  balance: 100,
};

const app = new Hono();
app.get("*", (c) => c.json({ status: "success", data: { wallet } }));

const server = Deno.serve({ port, hostname: "127.0.0.1", onListen() {} }, app.fetch);
Deno.addSignalListener("SIGTERM", () => void server.shutdown().then(() => Deno.exit(0)));
