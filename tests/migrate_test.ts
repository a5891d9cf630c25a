/**
 * The migration runner against the real Postgres: every test gets its own temporary database and its own
 * temporary migrations directory, both removed in after().
 */
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { createMigration, migrateDown, migrateUp, migrationStatus } from "../src/db/migrate.ts";

const PROJECT_ROOT = fileURLToPath(new URL("..", import.meta.url));
const REAL_MIGRATIONS_DIR = join(PROJECT_ROOT, "migrations");
const BASE_URL = Deno.env.get("DATABASE_URL") || "postgres://postgres@127.0.0.1:5432/postgres";

const createdDatabases: string[] = [];
const createdDirs: string[] = [];

function urlFor(database: string): string {
  const url = new URL(BASE_URL);
  url.pathname = `/${database}`;
  return url.toString();
}

function adminClient() {
  return postgres(urlFor("postgres"), { max: 1, onnotice: () => {} });
}

/** A fresh empty database; returns its URL. */
async function tempDatabase(): Promise<string> {
  const name = `migrate_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const admin = adminClient();
  try {
    await admin.unsafe(`create database ${name}`);
  } finally {
    await admin.end({ timeout: 5 });
  }
  createdDatabases.push(name);
  return urlFor(name);
}

/** A temp migrations dir holding `files` (file name -> SQL). */
async function tempMigrations(files: Record<string, string>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "migrate_test_" });
  createdDirs.push(dir);
  for (const [name, text] of Object.entries(files)) await Deno.writeTextFile(join(dir, name), text);
  return dir;
}

/** Run `fn` with a client on `url`, always closing it. */
async function withDb<T>(url: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

async function recorded(url: string): Promise<{ version: string; name: string; checksum: string }[]> {
  return await withDb(url, async (sql) => {
    const rows = await sql<{ version: string; name: string; checksum: string }[]>`
      select version::text, name, checksum from schema_migrations order by version
    `;
    return rows.map((r) => ({ version: r.version, name: r.name, checksum: r.checksum }));
  });
}

async function tables(url: string): Promise<string[]> {
  return await withDb(url, async (sql) => {
    const rows = await sql<{ table_name: string }[]>`
      select table_name from information_schema.tables
      where table_schema = 'public' and table_name <> 'schema_migrations' order by table_name
    `;
    return rows.map((r) => r.table_name);
  });
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

const FIXTURES: Record<string, string> = {
  "000001_create_a.up.sql": "CREATE TABLE a (id int PRIMARY KEY);\n",
  "000001_create_a.down.sql": "DROP TABLE a;\n",
  "000002_create_b.up.sql": "CREATE TABLE b (id int PRIMARY KEY);\nINSERT INTO b VALUES (1), (2);\n",
  "000002_create_b.down.sql": "DROP TABLE b;\n",
  "000003_create_c.up.sql": "CREATE TABLE c (id int PRIMARY KEY, b_id int REFERENCES b (id));\n" +
    "CREATE INDEX c_b_id ON c (b_id);\n",
  "000003_create_c.down.sql": "DROP TABLE c;\n",
};

after(async () => {
  const admin = adminClient();
  try {
    for (const name of createdDatabases) await admin.unsafe(`drop database if exists ${name} with (force)`);
  } finally {
    await admin.end({ timeout: 5 });
  }
  for (const dir of createdDirs) await Deno.remove(dir, { recursive: true });
});

describe("migrateUp", () => {
  it("applies every migration in order and records the checksum of each up file", async () => {
    const url = await tempDatabase();
    const dir = await tempMigrations(FIXTURES);
    const lines: string[] = [];

    const applied = await migrateUp(url, { dir, log: (line) => lines.push(line) });

    assert.deepEqual(applied, ["000001", "000002", "000003"]);
    assert.equal(lines.length, 3);
    assert.match(lines[0], /^applied 000001_create_a \(\d+ ms\)$/);
    assert.match(lines[2], /^applied 000003_create_c \(\d+ ms\)$/);
    assert.deepEqual(await recorded(url), [
      { version: "1", name: "create_a", checksum: await sha256Hex(FIXTURES["000001_create_a.up.sql"]) },
      { version: "2", name: "create_b", checksum: await sha256Hex(FIXTURES["000002_create_b.up.sql"]) },
      { version: "3", name: "create_c", checksum: await sha256Hex(FIXTURES["000003_create_c.up.sql"]) },
    ]);
    assert.deepEqual(await tables(url), ["a", "b", "c"]);
  });

  it("is a no-op when everything is applied", async () => {
    const url = await tempDatabase();
    const dir = await tempMigrations(FIXTURES);
    await migrateUp(url, { dir });
    const lines: string[] = [];

    assert.deepEqual(await migrateUp(url, { dir, log: (line) => lines.push(line) }), []);
    assert.deepEqual(lines, []);
    assert.equal((await recorded(url)).length, 3);
  });

  it("applies only `steps` migrations when asked", async () => {
    const url = await tempDatabase();
    const dir = await tempMigrations(FIXTURES);

    assert.deepEqual(await migrateUp(url, { dir, steps: 1 }), ["000001"]);
    assert.deepEqual(await migrateUp(url, { dir, steps: 1 }), ["000002"]);
    assert.deepEqual(await tables(url), ["a", "b"]);
    await assert.rejects(migrateUp(url, { dir, steps: 0 }), /steps must be a positive whole number/);
  });

  it("refuses to run when an applied up file was edited, and applies nothing", async () => {
    const url = await tempDatabase();
    const dir = await tempMigrations(FIXTURES);
    await migrateUp(url, { dir, steps: 1 });
    await Deno.writeTextFile(
      join(dir, "000001_create_a.up.sql"),
      "CREATE TABLE a (id bigint PRIMARY KEY);\n",
    );

    await assert.rejects(
      migrateUp(url, { dir }),
      /Migration 000001_create_a\.up\.sql was changed after it was applied \(checksum [0-9a-f]{64} applied, [0-9a-f]{64} now\): add a new migration instead of editing an applied one/,
    );
    assert.deepEqual((await recorded(url)).map((r) => r.version), ["1"]);
    assert.deepEqual(await tables(url), ["a"]);
    const status = await migrationStatus(url, { dir });
    assert.equal(status[0].state, "checksum_mismatch");
  });

  it("rolls back only the migration with an SQL error and does not record it", async () => {
    const url = await tempDatabase();
    const dir = await tempMigrations({
      "000001_create_a.up.sql": FIXTURES["000001_create_a.up.sql"],
      "000002_create_b.up.sql": FIXTURES["000002_create_b.up.sql"],
      "000003_broken.up.sql": "CREATE TABLE half_done (id int);\nSELECT * FROM no_such_table;\n",
      "000004_create_d.up.sql": "CREATE TABLE d (id int);\n",
    });

    await assert.rejects(
      migrateUp(url, { dir }),
      /Migration 000003_broken\.up\.sql failed and was rolled back \(line 2\): relation "no_such_table" does not exist/,
    );
    assert.deepEqual((await recorded(url)).map((r) => r.version), ["1", "2"]);
    assert.deepEqual(await tables(url), ["a", "b"]);
  });

  it("refuses when the file of an applied migration is missing", async () => {
    const url = await tempDatabase();
    const dir = await tempMigrations(FIXTURES);
    await migrateUp(url, { dir, steps: 2 });
    await Deno.remove(join(dir, "000002_create_b.up.sql"));
    await Deno.remove(join(dir, "000002_create_b.down.sql"));

    await assert.rejects(
      migrateUp(url, { dir }),
      /Migration 000002_create_b is applied but 000002_create_b\.up\.sql is missing/,
    );
    assert.deepEqual(await tables(url), ["a", "b"]);
    const status = await migrationStatus(url, { dir });
    assert.deepEqual(status.map((s) => [s.version, s.state]), [
      ["000001", "applied"],
      ["000002", "missing_file"],
      ["000003", "pending"],
    ]);
  });

  it("applies each migration exactly once when two runners start together", async () => {
    const url = await tempDatabase();
    const dir = await tempMigrations({
      // No IF NOT EXISTS: a second run of any of these would fail.
      "000001_slow.up.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(0.3);\n",
      "000002_create_b.up.sql": FIXTURES["000002_create_b.up.sql"],
      "000003_create_c.up.sql": FIXTURES["000003_create_c.up.sql"],
    });
    const waits: string[] = [];
    const log = (line: string) => line.startsWith("waiting") && waits.push(line);

    const [first, second] = await Promise.all([migrateUp(url, { dir, log }), migrateUp(url, { dir, log })]);

    assert.deepEqual([...first, ...second].sort(), ["000001", "000002", "000003"]);
    assert.ok(first.length === 0 || second.length === 0, "one runner applied everything, the other nothing");
    assert.equal(waits.length, 1);
    assert.deepEqual((await recorded(url)).map((r) => r.version), ["1", "2", "3"]);
  });

  it("refuses badly named .sql files and ignores other files", async () => {
    const url = await tempDatabase();
    const dir = await tempMigrations({ ...FIXTURES, "README.md": "notes", "1_bad.up.sql": "SELECT 1;" });

    await assert.rejects(migrateUp(url, { dir }), /1_bad\.up\.sql is not named NNNNNN_snake_case_name/);
    await Deno.remove(join(dir, "1_bad.up.sql"));
    assert.equal((await migrateUp(url, { dir })).length, 3);
  });
});

describe("migrationStatus", () => {
  it("lists applied and pending migrations without creating anything", async () => {
    const url = await tempDatabase();
    const dir = await tempMigrations(FIXTURES);

    const before = await migrationStatus(url, { dir });
    assert.deepEqual(before.map((s) => s.state), ["pending", "pending", "pending"]);
    assert.equal(
      await withDb(url, async (sql) => (await sql`select to_regclass('schema_migrations') as t`)[0].t),
      null,
    );

    await migrateUp(url, { dir, steps: 2 });
    const status = await migrationStatus(url, { dir });
    assert.deepEqual(status.map((s) => [s.id, s.state]), [
      ["000001_create_a", "applied"],
      ["000002_create_b", "applied"],
      ["000003_create_c", "pending"],
    ]);
    assert.ok(status[0].appliedAt instanceof Date);
    assert.equal(status[2].appliedAt, null);
    assert.equal(status[0].checksum, status[0].appliedChecksum);
  });
});

describe("migrateDown", () => {
  it("reverts the last migration by default, then N more, deleting their rows", async () => {
    const url = await tempDatabase();
    const dir = await tempMigrations(FIXTURES);
    await migrateUp(url, { dir });
    const lines: string[] = [];

    assert.deepEqual(await migrateDown(url, { dir, log: (line) => lines.push(line) }), ["000003"]);
    assert.match(lines[0], /^reverted 000003_create_c \(\d+ ms\)$/);
    assert.deepEqual(await tables(url), ["a", "b"]);
    assert.deepEqual((await recorded(url)).map((r) => r.version), ["1", "2"]);

    assert.deepEqual(await migrateDown(url, { dir, steps: 5 }), ["000002", "000001"]);
    assert.deepEqual(await tables(url), []);
    assert.deepEqual(await recorded(url), []);
    assert.deepEqual(await migrateDown(url, { dir }), []);
  });

  it("refuses to revert a migration without a down file", async () => {
    const url = await tempDatabase();
    const dir = await tempMigrations(FIXTURES);
    await migrateUp(url, { dir });
    await Deno.remove(join(dir, "000003_create_c.down.sql"));

    await assert.rejects(
      migrateDown(url, { dir }),
      /Cannot revert migration 000003_create_c: .*down\.sql does not exist/,
    );
    assert.equal((await recorded(url)).length, 3);
  });
});

describe("createMigration", () => {
  it("creates the next-numbered up/down pair", async () => {
    const dir = await tempMigrations({});
    const first = await createMigration("create_wallets", { dir });
    assert.equal(first.version, "000001");
    assert.equal(first.upPath, join(dir, "000001_create_wallets.up.sql"));
    assert.equal(first.downPath, join(dir, "000001_create_wallets.down.sql"));

    await Deno.writeTextFile(join(dir, "000007_later.up.sql"), "SELECT 1;\n");
    const next = await createMigration("add_wallet_index2", { dir });
    assert.equal(next.version, "000008");
    const names = [];
    for await (const entry of Deno.readDir(dir)) names.push(entry.name);
    assert.deepEqual(names.sort(), [
      "000001_create_wallets.down.sql",
      "000001_create_wallets.up.sql",
      "000007_later.up.sql",
      "000008_add_wallet_index2.down.sql",
      "000008_add_wallet_index2.up.sql",
    ]);
  });

  it("rejects a name that is not snake_case and creates nothing", async () => {
    const dir = await tempMigrations({});
    for (
      const bad of ["", "CreateWallets", "create-wallets", "1_create", "create__wallets", "../escape", "a b"]
    ) {
      await assert.rejects(createMigration(bad, { dir }), /must be snake_case/, bad);
    }
    const names = [];
    for await (const entry of Deno.readDir(dir)) names.push(entry.name);
    assert.deepEqual(names, []);
  });
});

describe("migrate CLI", () => {
  async function runCli(args: string[], databaseUrl: string) {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "src/db/migrate_cli.ts", ...args],
      cwd: PROJECT_ROOT,
      env: { DATABASE_URL: databaseUrl, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decoder = new TextDecoder();
    return {
      code: output.code,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
    };
  }

  it("prints status as a table, applies with up, and reports errors with exit 1", async () => {
    const url = await tempDatabase();
    const dir = await tempMigrations(FIXTURES);

    const status = await runCli(["status", "--dir", dir], url);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /^VERSION\s+NAME\s+STATE\s+APPLIED AT$/m);
    assert.match(status.stdout, /^000001\s+create_a\s+pending\s+-$/m);

    const up = await runCli(["up", "2", "--dir", dir], url);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout, /^applied 000001_create_a \(\d+ ms\)\napplied 000002_create_b \(\d+ ms\)\n$/);

    const after = await runCli(["status", "--dir", dir], url);
    assert.match(after.stdout, /^000002\s+create_b\s+applied\s+\d{4}-/m);
    assert.match(after.stdout, /^000003\s+create_c\s+pending\s+-$/m);

    await Deno.writeTextFile(join(dir, "000001_create_a.up.sql"), "-- edited\n");
    const refused = await runCli(["up", "--dir", dir], url);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /000001_create_a\.up\.sql was changed after it was applied/);
  });

  it("prints the usage and exits non-zero on a bad subcommand or argument", async () => {
    const url = await tempDatabase();
    for (const args of [["bogus"], [], ["down", "zero"], ["create"], ["status", "extra"]]) {
      const result = await runCli(args, url);
      assert.notEqual(result.code, 0, args.join(" "));
      assert.match(result.stderr, /Usage: deno task migrate/, args.join(" "));
    }
  });
});

describe("the project's migrations/ directory", () => {
  const upFiles = (() => {
    try {
      return [...Deno.readDirSync(REAL_MIGRATIONS_DIR)].filter((e) => e.name.endsWith(".up.sql")).length;
    } catch {
      return 0;
    }
  })();

  it(
    "applies up, reverts all the way down, and applies up again on a fresh database",
    { skip: upFiles === 0 ? "migrations/ has no migrations yet" : false },
    async () => {
      const url = await tempDatabase();
      const dir = REAL_MIGRATIONS_DIR;

      const applied = await migrateUp(url, { dir });
      assert.equal(applied.length, upFiles);
      assert.ok((await migrationStatus(url, { dir })).every((s) => s.state === "applied"));

      const reverted = await migrateDown(url, { dir, steps: upFiles });
      assert.deepEqual(reverted, [...applied].reverse());
      assert.deepEqual(await recorded(url), []);
      assert.deepEqual(await tables(url), [], "the down files leave no table behind");

      assert.deepEqual(await migrateUp(url, { dir }), applied);
      assert.deepEqual(await migrateUp(url, { dir }), []);
    },
  );
});
