/**
 * A PRIVATE Kafka broker for tests that stop Kafka: its own temporary state dir and free ports, the jars of
 * the shared local installation (symlinked, nothing downloaded). Only ever stopped by the pid we started;
 * the shared broker is never touched.
 */
import {
  isKafkaReachable,
  kafkaPaths,
  serverProperties,
  storageFormatArgs,
} from "../../src/ops/kafka_local.ts";
import { exists, isPidAlive } from "../../src/ops/local_process.ts";
import { waitUntil } from "./topic.ts";
import { freePort } from "./private_servers.ts";

export interface PrivateBroker {
  brokers: string[];
  /** The running broker's pid, or null while stopped. */
  readonly pid: number | null;
  /** Start (again) on the same data folder and wait until it answers. */
  start(): Promise<void>;
  /** SIGTERM by pid and wait for the exit (SIGKILL after 30 s). */
  stop(): Promise<void>;
  /** Stop if running and remove the state dir. */
  dispose(): Promise<void>;
}

/**
 * A random cluster id (16 bytes, base64url) that always starts with "-": one in 64 random ids does, and the
 * storage format command once took such an id for an option, so every run covers that case.
 */
function randomClusterId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (62 << 2) | (bytes[0] & 0b11); // the first base64url digit is 62: "-"
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

async function run(command: string, args: string[]): Promise<void> {
  const output = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).output();
  if (!output.success) {
    const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    throw new Error(`${command} ${args.join(" ")} failed (exit ${output.code}):\n${text.slice(-3000)}`);
  }
}

/** Create the state dir, format storage and start a broker; call `dispose()` in `after()`. */
export async function startPrivateBroker(): Promise<PrivateBroker> {
  const sharedLibs = kafkaPaths().libs;
  if (!exists(sharedLibs)) {
    throw new Error(`No Kafka jars at ${sharedLibs}: run \`deno task services\` once to download them`);
  }
  const root = await Deno.makeTempDir({ prefix: "mini-wallet-kafka-test-" });
  const paths = kafkaPaths(root);
  await Deno.mkdir(paths.root, { recursive: true });
  await Deno.symlink(sharedLibs, paths.libs);
  const port = freePort();
  let controllerPort = freePort();
  while (controllerPort === port) controllerPort = freePort();
  await Deno.writeTextFile(paths.properties, serverProperties({ port, controllerPort, dataDir: paths.data }));
  await run("java", storageFormatArgs(paths, randomClusterId()));
  const brokers = [`127.0.0.1:${port}`];
  let child: Deno.ChildProcess | null = null;

  async function start() {
    if (child) return;
    const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
    // `exec` keeps the pid: the shell becomes java, so the pid we hold is the broker's.
    const script = `exec java -Xms256m -Xmx512m -cp ${quote(`${paths.libs}/*`)} kafka.Kafka ` +
      `${quote(paths.properties)} >> ${quote(paths.log)} 2>&1 < /dev/null`;
    const spawned = new Deno.Command("sh", { args: ["-c", script], stdout: "null", stderr: "null" }).spawn();
    child = spawned;
    try {
      await waitUntil(async () => {
        if (!isPidAlive(spawned.pid)) throw new Error(`private Kafka broker exited; log: ${paths.log}`);
        return await isKafkaReachable(brokers, 1000);
      }, { timeoutMs: 60_000, intervalMs: 250, message: `private Kafka broker at ${brokers[0]} ready` });
    } catch (error) {
      await stop();
      throw error;
    }
  }

  async function stop() {
    const running = child;
    if (!running) return;
    child = null;
    running.kill("SIGTERM");
    const timer = setTimeout(() => {
      try {
        running.kill("SIGKILL");
      } catch { /* already gone */ }
    }, 30_000);
    await running.status;
    clearTimeout(timer);
  }

  await start();
  return {
    brokers,
    get pid() {
      return child?.pid ?? null;
    },
    start,
    stop,
    async dispose() {
      await stop();
      await Deno.remove(root, { recursive: true }).catch(() => {});
    },
  };
}
