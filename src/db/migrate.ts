/**
 * The migration runner, golang-migrate style: plain SQL files `NNNNNN_name.up.sql` / `NNNNNN_name.down.sql`.
 *
 * Applied migrations are recorded in `schema_migrations` with the sha256 of their up file. Every run holds a
 * session advisory lock on one reserved connection, so concurrent runners (several pods starting at once)
 * apply each migration exactly once: the second waits, then finds nothing to do. Each migration runs in its
 * own transaction together with its `schema_migrations` row, so a failing file leaves no trace. Files must
 * therefore not contain their own `BEGIN`/`COMMIT` (nor statements that cannot run in a transaction).
 */
import { join } from "node:path";
import postgres from "postgres";

/** Where migrations live unless told otherwise (relative to the working directory). */
export const DEFAULT_MIGRATIONS_DIR = "migrations";

/** The advisory lock key every runner takes; any fixed bigint works as long as all runners agree. */
const LOCK_KEY = "7262831409166547301";

const FILE_PATTERN = /^(\d{6})_([a-z0-9_]+)\.(up|down)\.sql$/;
const NAME_PATTERN = /^[a-z][a-z0-9]*(_[a-z0-9]+)*$/;
const MAX_VERSION = 999_999;

/** Raised when migrations cannot be read, verified, applied or reverted; the message says why. */
export class MigrationError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MigrationError";
  }
}

/** One migration found on disk. */
export interface MigrationFile {
  /** The six-digit version, e.g. `"000001"`. */
  version: string;
  name: string;
  /** `version_name`, e.g. `"000001_create_wallets"`. */
  id: string;
  upPath: string;
  downPath: string | null;
  /** sha256 hex of the up file. */
  checksum: string;
}

/** Where one migration stands: on disk and/or in `schema_migrations`. */
export type MigrationState = "applied" | "pending" | "checksum_mismatch" | "missing_file";

/** One row of {@link migrationStatus}. */
export interface MigrationStatus {
  version: string;
  name: string;
  id: string;
  state: MigrationState;
  /** sha256 of the up file on disk, `null` when the file is missing. */
  checksum: string | null;
  /** sha256 recorded when the migration was applied, `null` when pending. */
  appliedChecksum: string | null;
  appliedAt: Date | null;
}

export interface MigrateUpOptions {
  dir?: string;
  log?: (line: string) => void;
  /** Apply at most this many pending migrations (default: all). */
  steps?: number;
}

export interface MigrateDownOptions {
  dir?: string;
  log?: (line: string) => void;
  /** Revert this many applied migrations, newest first (default 1). */
  steps?: number;
}

interface AppliedRow {
  version: string;
  name: string;
  checksum: string;
  appliedAt: Date;
}

type Reserved = postgres.ReservedSql<Record<string, never>>;

/** Apply pending migrations in version order; returns the versions applied (e.g. `["000001"]`). */
export async function migrateUp(
  databaseUrl: string,
  options: { dir?: string; log?: (line: string) => void; steps?: number } = {},
): Promise<string[]> {
  const { dir = DEFAULT_MIGRATIONS_DIR, log = () => {}, steps } = options;
  if (steps !== undefined) assertSteps(steps);
  const migrations = await readMigrations(dir);

  return await withMigrationLock(databaseUrl, log, async (conn) => {
    const applied = await readApplied(conn);
    verifyApplied(dir, migrations, applied);
    const pending = migrations.filter((m) => !applied.has(m.version)).slice(0, steps ?? Infinity);

    const done: string[] = [];
    for (const migration of pending) {
      const started = performance.now();
      const bytes = await Deno.readFile(migration.upPath);
      const text = new TextDecoder().decode(bytes);
      if (await sha256Hex(bytes) !== migration.checksum) {
        throw new MigrationError(`Migration ${migration.id}.up.sql changed while migrating: run again`);
      }
      await inTransaction(conn, `${migration.id}.up.sql`, text, async () => {
        await conn.unsafe(text);
        await conn`
          insert into schema_migrations (version, name, checksum)
          values (${Number(migration.version)}, ${migration.name}, ${migration.checksum})
        `;
      });
      log(`applied ${migration.id} (${Math.round(performance.now() - started)} ms)`);
      done.push(migration.version);
    }
    return done;
  });
}

/** Revert the newest applied migrations (default 1) with their down files; returns the versions reverted. */
export async function migrateDown(databaseUrl: string, options: MigrateDownOptions = {}): Promise<string[]> {
  const { dir = DEFAULT_MIGRATIONS_DIR, log = () => {}, steps = 1 } = options;
  assertSteps(steps);
  const migrations = await readMigrations(dir);
  const byVersion = new Map(migrations.map((m) => [m.version, m]));

  return await withMigrationLock(databaseUrl, log, async (conn) => {
    const applied = await readApplied(conn);
    verifyApplied(dir, migrations, applied);
    const targets = [...applied.keys()].sort().reverse().slice(0, steps).map((v) => byVersion.get(v)!);
    const withoutDown = targets.find((m) => m.downPath === null);
    if (withoutDown) {
      throw new MigrationError(
        `Cannot revert migration ${withoutDown.id}: ${withoutDown.id}.down.sql does not exist in ${dir}`,
      );
    }

    const done: string[] = [];
    for (const migration of targets) {
      const started = performance.now();
      const text = await Deno.readTextFile(migration.downPath!);
      await inTransaction(conn, `${migration.id}.down.sql`, text, async () => {
        await conn.unsafe(text);
        await conn`delete from schema_migrations where version = ${Number(migration.version)}`;
      });
      log(`reverted ${migration.id} (${Math.round(performance.now() - started)} ms)`);
      done.push(migration.version);
    }
    return done;
  });
}

/** Every migration on disk or in the database, in version order, with its state; changes nothing. */
export async function migrationStatus(
  databaseUrl: string,
  options: { dir?: string } = {},
): Promise<MigrationStatus[]> {
  const { dir = DEFAULT_MIGRATIONS_DIR } = options;
  const migrations = await readMigrations(dir);
  const sql = connect(databaseUrl);
  let applied: Map<string, AppliedRow>;
  try {
    const [{ exists }] = await sql<{ exists: boolean }[]>`
      select to_regclass('schema_migrations') is not null as exists
    `;
    applied = exists ? await readApplied(sql) : new Map();
  } finally {
    await sql.end({ timeout: 5 });
  }

  const rows: MigrationStatus[] = migrations.map((m) => {
    const row = applied.get(m.version);
    return {
      version: m.version,
      name: m.name,
      id: m.id,
      state: !row ? "pending" : row.checksum === m.checksum ? "applied" : "checksum_mismatch",
      checksum: m.checksum,
      appliedChecksum: row?.checksum ?? null,
      appliedAt: row?.appliedAt ?? null,
    };
  });
  const onDisk = new Set(migrations.map((m) => m.version));
  for (const row of applied.values()) {
    if (onDisk.has(row.version)) continue;
    rows.push({
      version: row.version,
      name: row.name,
      id: `${row.version}_${row.name}`,
      state: "missing_file",
      checksum: null,
      appliedChecksum: row.checksum,
      appliedAt: row.appliedAt,
    });
  }
  return rows.sort((a, b) => a.version.localeCompare(b.version));
}

/** Create an empty up/down pair with the next version number; `name` must be snake_case. */
export async function createMigration(
  name: string,
  options: { dir?: string } = {},
): Promise<{ version: string; upPath: string; downPath: string }> {
  const { dir = DEFAULT_MIGRATIONS_DIR } = options;
  if (!NAME_PATTERN.test(name) || name.length > 100) {
    throw new MigrationError(
      `Cannot create migration "${name}": the name must be snake_case (lowercase letters, digits, underscores; ` +
        `starting with a letter), e.g. create_wallets`,
    );
  }
  await Deno.mkdir(dir, { recursive: true });
  const migrations = await readMigrations(dir);
  const next = migrations.length === 0 ? 1 : Number(migrations[migrations.length - 1].version) + 1;
  if (next > MAX_VERSION) {
    throw new MigrationError(`Cannot create migration: version ${next} has more than 6 digits`);
  }
  const version = String(next).padStart(6, "0");
  const upPath = join(dir, `${version}_${name}.up.sql`);
  const downPath = join(dir, `${version}_${name}.down.sql`);
  await Deno.writeTextFile(upPath, `-- ${version}_${name}: up\n`, { createNew: true });
  await Deno.writeTextFile(downPath, `-- ${version}_${name}: down (undo exactly what the up file does)\n`, {
    createNew: true,
  });
  return { version, upPath, downPath };
}

/** Read and check the migrations directory: names, pairs, duplicates; sorted by version. */
async function readMigrations(dir: string): Promise<MigrationFile[]> {
  const entries: Deno.DirEntry[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) entries.push(entry);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new MigrationError(`Cannot read migrations: directory ${dir} does not exist`, { cause: error });
    }
    throw error;
  }

  const byVersion = new Map<string, { name: string; up?: string; down?: string }>();
  for (const entry of entries) {
    if (!entry.isFile || !entry.name.endsWith(".sql")) continue;
    const match = FILE_PATTERN.exec(entry.name);
    if (!match) {
      throw new MigrationError(
        `Cannot read migrations: ${entry.name} is not named NNNNNN_snake_case_name.up.sql or .down.sql`,
      );
    }
    const [, version, name, direction] = match;
    const found = byVersion.get(version) ?? { name };
    if (found.name !== name) {
      throw new MigrationError(
        `Cannot read migrations: version ${version} is used by both ${version}_${found.name} and ${version}_${name}`,
      );
    }
    found[direction as "up" | "down"] = join(dir, entry.name);
    byVersion.set(version, found);
  }

  const migrations: MigrationFile[] = [];
  for (const [version, { name, up, down }] of byVersion) {
    const id = `${version}_${name}`;
    if (Number(version) === 0) throw new MigrationError(`Cannot read migrations: ${id} must start at 000001`);
    if (!up) throw new MigrationError(`Cannot read migrations: ${id}.down.sql has no ${id}.up.sql`);
    const checksum = await sha256Hex(await Deno.readFile(up));
    migrations.push({ version, name, id, upPath: up, downPath: down ?? null, checksum });
  }
  return migrations.sort((a, b) => a.version.localeCompare(b.version));
}

/** Refuse to go on when an applied migration's file is missing or was edited after it was applied. */
function verifyApplied(dir: string, migrations: MigrationFile[], applied: Map<string, AppliedRow>): void {
  const byVersion = new Map(migrations.map((m) => [m.version, m]));
  for (const row of applied.values()) {
    const file = byVersion.get(row.version);
    if (!file) {
      throw new MigrationError(
        `Migration ${row.version}_${row.name} is applied but ${row.version}_${row.name}.up.sql is missing ` +
          `from ${dir}: restore the file instead of deleting an applied migration`,
      );
    }
    if (file.checksum !== row.checksum) {
      throw new MigrationError(
        `Migration ${file.id}.up.sql was changed after it was applied (checksum ${row.checksum} applied, ` +
          `${file.checksum} now): add a new migration instead of editing an applied one`,
      );
    }
  }
}

/** Run `fn` on one reserved connection holding the migration advisory lock; always unlocks and closes. */
async function withMigrationLock<T>(
  databaseUrl: string,
  log: (line: string) => void,
  fn: (conn: Reserved) => Promise<T>,
): Promise<T> {
  const sql = connect(databaseUrl);
  try {
    const conn = await sql.reserve();
    try {
      const [{ locked }] = await conn<{ locked: boolean }[]>`
        select pg_try_advisory_lock(${LOCK_KEY}::bigint) as locked
      `;
      if (!locked) {
        log("waiting for the migration lock (another runner is migrating this database)");
        await conn`select pg_advisory_lock(${LOCK_KEY}::bigint)`;
      }
      try {
        await conn`
          create table if not exists schema_migrations (
            version bigint primary key,
            name text not null,
            checksum text not null,
            applied_at timestamptz not null default now()
          )
        `;
        return await fn(conn);
      } finally {
        // Ending the session releases the lock anyway; do not hide the real error behind this one.
        await conn`select pg_advisory_unlock(${LOCK_KEY}::bigint)`.catch(() => {});
      }
    } finally {
      conn.release();
    }
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** Run `fn` in a transaction on the reserved connection; a failure rolls back and names the file. */
async function inTransaction(
  conn: Reserved,
  file: string,
  text: string,
  fn: () => Promise<void>,
): Promise<void> {
  await conn`begin`;
  try {
    await fn();
    await conn`commit`;
  } catch (error) {
    await conn`rollback`.catch(() => {});
    const where = error instanceof postgres.PostgresError && error.position
      ? ` (line ${lineOf(text, Number(error.position))})`
      : "";
    const reason = error instanceof Error ? error.message : String(error);
    throw new MigrationError(`Migration ${file} failed and was rolled back${where}: ${reason}`, {
      cause: error,
    });
  }
}

async function readApplied(sql: postgres.Sql<Record<string, never>>): Promise<Map<string, AppliedRow>> {
  const rows = await sql<{ version: string; name: string; checksum: string; applied_at: Date }[]>`
    select version, name, checksum, applied_at from schema_migrations order by version
  `;
  return new Map(
    rows.map((r) => {
      const version = String(r.version).padStart(6, "0");
      return [version, { version, name: r.name, checksum: r.checksum, appliedAt: r.applied_at }];
    }),
  );
}

function connect(databaseUrl: string): postgres.Sql<Record<string, never>> {
  return postgres(databaseUrl, {
    max: 1,
    onnotice: () => {},
    connection: { application_name: "mini-wallet-migrate" },
  });
}

function assertSteps(steps: number): void {
  if (!Number.isInteger(steps) || steps < 1) {
    throw new MigrationError(`Cannot migrate: steps must be a positive whole number, got ${steps}`);
  }
}

function lineOf(text: string, position: number): number {
  return text.slice(0, Math.max(0, position - 1)).split("\n").length;
}

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}
