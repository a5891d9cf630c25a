/**
 * The token secret of `deno task dev` when none is configured: random, made once and kept in the local state
 * folder (outside git, readable by its owner only), so a fresh machine needs no configuration and tokens stay
 * valid across restarts. `deno task start` never does this: it refuses to run without `JWT_SECRET`.
 */
import { stateDir } from "./local_process.ts";

/** Where the secret came from, for the line `dev` prints. */
export interface DevSecret {
  secret: string;
  /** The file it is kept in, or null when `JWT_SECRET` was set. */
  path: string | null;
  /** True when this call made the file. */
  created: boolean;
}

const FILE_NAME = "jwt_secret";

/** 48 random bytes, base64url: 64 characters. */
function randomSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(48));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
}

/**
 * `JWT_SECRET` from `env` when set; otherwise the secret kept in `dir` (made there first if missing, or if
 * what is there is too short to be one of ours).
 */
export async function devSecret(
  env: Record<string, string | undefined> = Deno.env.toObject(),
  dir: string = stateDir(),
): Promise<DevSecret> {
  if (env.JWT_SECRET) return { secret: env.JWT_SECRET, path: null, created: false };
  const path = `${dir}/${FILE_NAME}`;
  const kept = await readSecret(path);
  if (kept) return { secret: kept, path, created: false };
  await Deno.mkdir(dir, { recursive: true });
  const secret = randomSecret();
  // Written whole under a temporary name, then put in place in one step: a run starting at the same moment
  // sees no file or a complete one, never a half-written one.
  const temporary = `${path}.${crypto.randomUUID()}.tmp`;
  await Deno.writeTextFile(temporary, `${secret}\n`, { mode: 0o600 });
  try {
    if (kept === "") await Deno.rename(temporary, path); // replaces the unusable file
    else await Deno.link(temporary, path); // fails if another run made one meanwhile
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    const theirs = await readSecret(path);
    if (theirs) return { secret: theirs, path, created: false };
    throw error;
  } finally {
    await Deno.remove(temporary).catch(() => {}); // gone already after a rename
  }
  return { secret, path, created: true };
}

/** The secret in `path`; null when there is no file, "" when the file holds no usable secret. */
async function readSecret(path: string): Promise<string | null> {
  try {
    const text = (await Deno.readTextFile(path)).trim();
    return text.length >= 32 ? text : "";
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}
