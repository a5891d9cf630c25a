/**
 * Long histories for tests, written by PostgreSQL itself (generate_series), and the history's JSON as the
 * service built it before it was streamed: the reference the streamed bytes are compared with.
 */
import type { Sql } from "../../src/db/client.ts";
import { centsToNumber } from "../../src/wallet/money.ts";

/**
 * Add `count` transactions to a wallet in one statement. Reference ids `seed-000000001`, ... sort in insertion
 * order; amounts vary over whole and fractional values (the first is the largest allowed), every third is a
 * withdrawal, every seventh failed, and times carry microseconds (the JSON shows milliseconds). Ids are the
 * wallet id's first 24 characters and a counter: unique, and every index grows at its end (random ids made a
 * 200,000-row insert take 2.2 times as long).
 */
export async function seedHistory(sql: Sql, walletId: string, count: number): Promise<void> {
  await sql.begin(async (tx) => {
    // A million rows take longer than the pool's statement_timeout.
    await tx`SELECT set_config('statement_timeout', '0', true)`;
    await tx`
      INSERT INTO wallet_transactions (id, wallet_id, type, status, amount, reference_id, balance_after, created_at)
      SELECT (left(${walletId}, 24) || lpad(to_hex(g), 12, '0'))::uuid, ${walletId}::uuid,
        CASE WHEN g % 3 = 0 THEN 'withdrawal' ELSE 'deposit' END,
        CASE WHEN g % 7 = 0 THEN 'failed' ELSE 'success' END,
        CASE WHEN g = 1 THEN 100000000000000 ELSE 1 + (g::bigint * 7919) % 100000000 END,
        'seed-' || lpad(g::text, 9, '0'),
        g,
        timestamptz '2026-01-01 00:00:00+00' + g * interval '1234.567 microseconds'
      FROM generate_series(1, ${count}::int) AS g`;
  });
}

/**
 * GET /api/v1/wallet/transactions's body built the old way: every row read by one query (the statement of
 * the unstreamed implementation), presented field by field as before, and one JSON.stringify of the JSend
 * body, as `c.json` did.
 */
export async function referenceHistoryBody(sql: Sql, walletId: string): Promise<string> {
  const rows = await sql<
    {
      id: string;
      type: string;
      status: string;
      amount: string;
      reference_id: string;
      created_at: Date;
    }[]
  >`
    SELECT seq, id, wallet_id, type, status, amount, reference_id, balance_after, created_at
    FROM wallet_transactions WHERE wallet_id = ${walletId} AND seq > ${"0"}::bigint
    ORDER BY seq`;
  const transactions = rows.map((row) => ({
    id: row.id,
    status: row.status,
    transacted_at: row.created_at.toISOString(),
    type: row.type,
    amount: centsToNumber(BigInt(row.amount)),
    reference_id: row.reference_id,
  }));
  return JSON.stringify({ status: "success", data: { transactions } });
}
