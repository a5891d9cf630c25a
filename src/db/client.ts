/** The PostgreSQL connection pool (postgres.js), configured once for every role. */
import postgres from "postgres";

export type Sql = postgres.Sql;
export type TransactionSql = postgres.TransactionSql;

/** Open a pool; connections are made lazily, on first use. bigint columns arrive as strings (never Number). */
export function createSql(
  databaseUrl: string,
  options: { max?: number; applicationName?: string } = {},
): Sql {
  return postgres(databaseUrl, {
    max: options.max ?? 10,
    // Notices (e.g. "relation exists, skipping") are not errors; keep logs quiet.
    onnotice: () => {},
    // Fail fast when PostgreSQL is unreachable: a request should get a 500, not hang for 30 s.
    connect_timeout: 5,
    connection: { application_name: options.applicationName ?? "mini-wallet" },
  });
}
