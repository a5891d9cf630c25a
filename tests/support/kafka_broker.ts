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
import { exists } from "../../src/ops/local_process.ts";
import { freePort, type PrivateServer, supervise } from "./private_servers.ts";

/** A private broker: start, stop (SIGTERM; SIGKILL with `kill`), freeze and dispose by its pid. */
export interface PrivateBroker extends PrivateServer {
  brokers: string[];
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
  const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  // `exec` keeps the pid: the shell becomes java, so the pid we hold is the broker's.
  const script = `exec java -Xms256m -Xmx512m -cp ${quote(`${paths.libs}/*`)} kafka.Kafka ` +
    `${quote(paths.properties)} >> ${quote(paths.log)} 2>&1 < /dev/null`;
  const server = supervise(port, root, {
    command: "sh",
    args: ["-c", script],
    stopSignal: "SIGTERM",
    crashSignal: "SIGKILL",
    ready: () => isKafkaReachable(brokers, 1000),
    readyTimeoutMs: 60_000,
    name: "Kafka broker",
    log: paths.log,
  });
  await server.start();
  return Object.assign(server, { brokers });
}
