/**
 * Local PostgreSQL: use the server at DATABASE_URL, or start the Debian cluster, then create the database.
 *
 * We never stop Postgres: it belongs to the machine (a Debian cluster), not to us.
 */
import postgres from "postgres";
import {
  aptInstall,
  connectWithTimeout,
  elapsed,
  isPortOpen,
  type Log,
  runCommand,
  waitFor,
} from "./local_process.ts";

/** Make sure Postgres at `databaseUrl` accepts connections and its database exists. */
export async function ensurePostgres(databaseUrl: string, log: Log): Promise<{ started: boolean }> {
  const start = performance.now();
  const url = new URL(databaseUrl);
  const host = url.hostname || "127.0.0.1";
  const port = Number(url.port || 5432);
  let started = false;
  if (!await isPortOpen(host, port)) {
    await startCluster(port, log);
    started = true;
  } else if (!await speaksPostgres(host, port)) {
    throw new Error(`Port ${port} on ${host} is taken by something that is not PostgreSQL`);
  }
  if (!await waitFor(() => canQuery(databaseUrl), { timeoutMs: 30_000, intervalMs: 300 })) {
    throw new Error(
      `PostgreSQL at ${host}:${port} does not accept connections (check the user in DATABASE_URL)`,
    );
  }
  const created = await createDatabaseIfMissing(databaseUrl);
  log(
    `postgres: ${started ? "started, " : ""}${created ? "created" : "using"} database ` +
      `${databaseName(databaseUrl)} (${elapsed(start)})`,
  );
  return { started };
}

/** Drop (forcing out other sessions) and create the database again: a fresh, repeatable test database. */
export async function recreateDatabase(databaseUrl: string): Promise<void> {
  const name = databaseName(databaseUrl);
  const sql = adminClient(databaseUrl);
  try {
    await sql.unsafe(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
    await sql.unsafe(`CREATE DATABASE ${quoteIdent(name)}`);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** The database name in a postgres:// URL. */
export function databaseName(databaseUrl: string): string {
  const name = decodeURIComponent(new URL(databaseUrl).pathname.replace(/^\//, ""));
  if (!name) throw new Error("DATABASE_URL must name a database (postgres://user@host:port/<name>)");
  return name;
}

/** Create the URL's database when it does not exist; returns whether it did. */
async function createDatabaseIfMissing(databaseUrl: string): Promise<boolean> {
  const name = databaseName(databaseUrl);
  const sql = adminClient(databaseUrl);
  try {
    const rows = await sql`SELECT 1 FROM pg_database WHERE datname = ${name}`;
    if (rows.length > 0) return false;
    try {
      await sql.unsafe(`CREATE DATABASE ${quoteIdent(name)}`);
    } catch (error) {
      // Two processes starting together may race to create it.
      if ((error as { code?: string }).code !== "42P04") throw error;
    }
    return true;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** A one-connection client to the `postgres` maintenance database of the same server. */
function adminClient(databaseUrl: string) {
  const url = new URL(databaseUrl);
  url.pathname = "/postgres";
  return postgres(url.toString(), { max: 1, onnotice: () => {}, connect_timeout: 5 });
}

async function canQuery(databaseUrl: string): Promise<boolean> {
  const sql = adminClient(databaseUrl);
  try {
    await sql`SELECT 1`;
    return true;
  } catch (error) {
    // A wrong user or password will not fix itself by waiting.
    const code = (error as { code?: string }).code;
    if (code === "28000" || code === "28P01") throw error;
    return false;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** Send an SSLRequest: a Postgres server answers with exactly one byte, "S" or "N". */
async function speaksPostgres(host: string, port: number): Promise<boolean> {
  const conn = await connectWithTimeout(host, port, 2000);
  if (!conn) return false;
  try {
    const request = new Uint8Array([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
    await conn.write(request);
    const reply = new Uint8Array(1);
    const timer = setTimeout(() => conn.close(), 2000);
    const n = await conn.read(reply).catch(() => null);
    clearTimeout(timer);
    return n === 1 && (reply[0] === 0x53 || reply[0] === 0x4e);
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed by the timer.
    }
  }
}

/** Start the locally installed Debian cluster (installing PostgreSQL only when absent). */
async function startCluster(port: number, log: Log): Promise<void> {
  let versions = listClusters();
  if (versions.length === 0) {
    await aptInstall(["postgresql"], log);
    versions = listClusters();
    if (versions.length === 0) {
      throw new Error("PostgreSQL installed but no cluster found in /etc/postgresql");
    }
  }
  const version = versions.at(-1)!;
  log(`postgres: starting cluster ${version}/main...`);
  const result = await runCommand("pg_ctlcluster", ["--skip-systemctl-redirect", version, "main", "start"]);
  // Exit code 2 means "already running" (on a different port than the URL says).
  if (result.code !== 0 && result.code !== 2) {
    throw new Error(`Cannot start PostgreSQL ${version}/main:\n${result.output.trim()}`);
  }
  if (!await waitFor(() => isPortOpen("127.0.0.1", port), { timeoutMs: 30_000, intervalMs: 300 })) {
    throw new Error(
      `PostgreSQL ${version}/main started but nothing listens on port ${port} (check its port)`,
    );
  }
}

function listClusters(): string[] {
  try {
    return [...Deno.readDirSync("/etc/postgresql")].filter((e) => e.isDirectory).map((e) => e.name)
      .sort((a, b) => Number(a) - Number(b));
  } catch {
    return [];
  }
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
