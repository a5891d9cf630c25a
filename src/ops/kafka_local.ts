/**
 * A real single-node Apache Kafka broker (KRaft, broker + controller) run from Maven Central jars, no Docker.
 *
 * Everything lives in the state dir (outside git): the jars, server.properties, the data folder, the log and
 * the pid file. The broker runs detached from our process so a Ctrl-C of `deno task dev` leaves it up and a
 * rerun reuses it; `deno task services down` stops it by pid.
 */
import { Kafka, logLevel } from "kafkajs";
import {
  commandExists,
  elapsed,
  exists,
  isPidAlive,
  isPortOpen,
  type Log,
  processCommandLine,
  readPidFile,
  removeFile,
  runCommand,
  stateDir,
  tailFile,
  tailText,
  waitFor,
} from "./local_process.ts";

/** The Kafka release we download; 4.x brokers need Java 17, which this version runs on. */
export const KAFKA_VERSION = "4.1.1";
const SLF4J_VERSION = "2.0.17";
/** A fixed cluster id is fine for one local node: 16 bytes, base64url, no padding. */
const CLUSTER_ID = "bWluaS13YWxsZXQtbG9jYQ";
const START_TIMEOUT_MS = 60_000;

/** Paths of the local Kafka installation inside the state dir. */
export function kafkaPaths(home = stateDir()) {
  const root = `${home}/kafka`;
  return {
    root,
    libs: `${root}/libs`,
    pom: `${root}/pom.xml`,
    libsMarker: `${root}/libs/.complete-${KAFKA_VERSION}`,
    properties: `${root}/server.properties`,
    data: `${root}/data`,
    log: `${root}/kafka.log`,
    pidFile: `${root}/kafka.pid`,
  };
}

/** Split "host:port" into its parts. */
export function parseBroker(broker: string): { host: string; port: number } {
  const at = broker.lastIndexOf(":");
  return { host: broker.slice(0, at), port: Number(broker.slice(at + 1)) };
}

/** True when a Kafka broker answers at these addresses (a metadata request through kafkajs). */
export async function isKafkaReachable(brokers: string[], timeoutMs = 3000): Promise<boolean> {
  const kafka = new Kafka({
    clientId: "mini-wallet-probe",
    brokers,
    logLevel: logLevel.NOTHING,
    connectionTimeout: timeoutMs,
    requestTimeout: timeoutMs,
    retry: { retries: 0 },
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
    await admin.describeCluster();
    return true;
  } catch {
    return false;
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/** The pid of the broker we started, if it is still alive and still a Kafka process. */
export function runningKafkaPid(home = stateDir()): number | undefined {
  const { pidFile } = kafkaPaths(home);
  const pid = readPidFile(pidFile);
  if (pid === undefined) return undefined;
  // A dead pid, or a pid reused by another program after a reboot, is stale state.
  if (!isPidAlive(pid) || !processCommandLine(pid).includes("kafka.Kafka")) {
    removeFile(pidFile);
    return undefined;
  }
  return pid;
}

/** Make sure a Kafka broker answers at `brokers`: reuse a reachable one, else start ours. */
export async function ensureKafka(brokers: string[], log: Log): Promise<{ started: boolean }> {
  const start = performance.now();
  const { host, port } = parseBroker(brokers[0]);
  if (await isPortOpen(host, port)) {
    if (await isKafkaReachable(brokers)) {
      log(`kafka: using the broker at ${brokers.join(",")}`);
      return { started: false };
    }
    // Our own broker may be mid-start (the port opens a moment before it answers).
    if (runningKafkaPid() !== undefined && await waitForKafka(brokers, runningKafkaPid()!, 20_000)) {
      log(`kafka: using the broker at ${brokers.join(",")}`);
      return { started: false };
    }
    throw new Error(
      `Port ${port} on ${host} is taken by something that is not a Kafka broker; ` +
        `free it or point KAFKA_BROKERS elsewhere`,
    );
  }
  if (!isLocalHost(host)) {
    throw new Error(`No Kafka broker answers at ${brokers.join(",")}, and ${host} is not this machine`);
  }
  if (!commandExists("java")) {
    throw new Error(
      "Cannot start Kafka: no `java` on PATH (install Java 17+, e.g. apt-get install -y default-jre)",
    );
  }

  const paths = kafkaPaths();
  Deno.mkdirSync(paths.root, { recursive: true });
  await downloadJars(paths, log);
  const controllerPort = port + 1;
  if (await isPortOpen("127.0.0.1", controllerPort)) {
    const pid = runningKafkaPid();
    if (pid === undefined) {
      throw new Error(`Cannot start Kafka: controller port ${controllerPort} is taken by another program`);
    }
  }
  Deno.writeTextFileSync(paths.properties, serverProperties({ port, controllerPort, dataDir: paths.data }));
  await formatStorage(paths);

  let pid = runningKafkaPid();
  if (pid === undefined) {
    log("kafka: starting broker...");
    pid = await spawnBroker(paths);
  } else {
    log(`kafka: broker process ${pid} is already starting...`);
  }
  if (!await waitForKafka(brokers, pid, START_TIMEOUT_MS)) {
    const alive = isPidAlive(pid);
    if (!alive) removeFile(paths.pidFile);
    throw new Error(
      `${
        alive ? `Kafka did not become ready within ${START_TIMEOUT_MS / 1000}s` : "Kafka broker exited early"
      }` +
        ` (log: ${paths.log}; a data folder left from another setup is a usual cause: ` +
        `remove ${paths.data} to start fresh):\n${tailFile(paths.log, 25)}`,
    );
  }
  log(`kafka: ready in ${elapsed(start)}`);
  return { started: true };
}

function isLocalHost(host: string): boolean {
  return ["127.0.0.1", "localhost", "::1", "0.0.0.0"].includes(host);
}

/** Fetch the broker jars with Maven once; a marker file says the copy completed. */
async function downloadJars(paths: ReturnType<typeof kafkaPaths>, log: Log): Promise<void> {
  if (exists(paths.libsMarker)) return;
  if (!commandExists("mvn")) {
    throw new Error("Cannot download Kafka: no `mvn` on PATH (install Maven, e.g. apt-get install -y maven)");
  }
  const start = performance.now();
  log("kafka: downloading jars (first run only)...");
  Deno.writeTextFileSync(paths.pom, pom());
  // A half-copied folder from an interrupted run must not mix with the new copy.
  if (exists(paths.libs)) Deno.removeSync(paths.libs, { recursive: true });
  const result = await runCommand("mvn", [
    "-q",
    "-B",
    "-f",
    paths.pom,
    "dependency:copy-dependencies",
    `-DoutputDirectory=${paths.libs}`,
  ]);
  if (result.code !== 0) {
    throw new Error(
      `Cannot download Kafka jars with Maven (exit ${result.code}):\n${tailText(result.output, 25)}`,
    );
  }
  Deno.writeTextFileSync(paths.libsMarker, `${new Date().toISOString()}\n`);
  log(`kafka: jars downloaded in ${elapsed(start)}`);
}

/** A pom whose only purpose is to pull the broker and a logging backend (the broker is mute without one). */
function pom(): string {
  const dep = (group: string, artifact: string, version: string) =>
    `    <dependency><groupId>${group}</groupId><artifactId>${artifact}</artifactId>` +
    `<version>${version}</version></dependency>`;
  return `<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.mini-wallet</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
${dep("org.apache.kafka", "kafka_2.13", KAFKA_VERSION)}
${dep("org.slf4j", "slf4j-api", SLF4J_VERSION)}
${dep("org.slf4j", "slf4j-simple", SLF4J_VERSION)}
  </dependencies>
</project>
`;
}

/** server.properties for one node that is both broker and controller, on 127.0.0.1 only. */
export function serverProperties(
  { port, controllerPort, dataDir }: { port: number; controllerPort: number; dataDir: string },
): string {
  return [
    "process.roles=broker,controller",
    "node.id=1",
    `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
    `advertised.listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
    "inter.broker.listener.name=PLAINTEXT",
    "controller.listener.names=CONTROLLER",
    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    `controller.quorum.bootstrap.servers=127.0.0.1:${controllerPort}`,
    `log.dirs=${dataDir}`,
    "num.partitions=6",
    "auto.create.topics.enable=false",
    // One node: every internal topic must fit on it.
    "offsets.topic.replication.factor=1",
    "offsets.topic.num.partitions=1",
    "transaction.state.log.replication.factor=1",
    "transaction.state.log.min.isr=1",
    "share.coordinator.state.topic.replication.factor=1",
    "share.coordinator.state.topic.min.isr=1",
    "default.replication.factor=1",
    "min.insync.replicas=1",
    "group.initial.rebalance.delay.ms=0",
    // Local data is disposable: keep the disk small.
    "log.retention.hours=24",
    "log.segment.bytes=67108864",
    "",
  ].join("\n");
}

/** `java` arguments that format a single-node KRaft storage folder (broker and controller in one). */
export function storageFormatArgs(paths: ReturnType<typeof kafkaPaths>, clusterId: string): string[] {
  return [
    "-cp",
    `${paths.libs}/*`,
    "kafka.tools.StorageTool",
    "format",
    "--standalone",
    // One argument with `=`: a random cluster id starts with "-" one time in 64, and as a separate argument
    // the tool then takes it for an option (seen in CI: "argument --cluster-id/-t: expected one argument").
    `--cluster-id=${clusterId}`,
    "--config",
    paths.properties,
  ];
}

/** Format the data folder once (`-g` skips a folder that is already formatted). */
async function formatStorage(paths: ReturnType<typeof kafkaPaths>): Promise<void> {
  if (exists(`${paths.data}/meta.properties`)) return;
  const result = await runCommand("java", [...storageFormatArgs(paths, CLUSTER_ID), "-g"]);
  if (result.code !== 0) {
    throw new Error(`Cannot format Kafka storage in ${paths.data}:\n${tailText(result.output, 20)}`);
  }
}

/** Start the broker in its own session (setsid) so our Ctrl-C does not reach it; returns its pid. */
async function spawnBroker(paths: ReturnType<typeof kafkaPaths>): Promise<number> {
  const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  const java = [
    "java",
    "-Xms256m",
    "-Xmx512m",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-cp",
    quote(`${paths.libs}/*`),
    "kafka.Kafka",
    quote(paths.properties),
  ].join(" ");
  // `setsid` in a non-interactive shell's background job execs in place, so `$!` is the java pid.
  const script = `cd ${quote(paths.root)} && setsid ${java} > ${quote(paths.log)} 2>&1 < /dev/null & echo $!`;
  const result = await runCommand("sh", ["-c", script]);
  const pid = Number.parseInt(result.output.trim(), 10);
  if (result.code !== 0 || !Number.isInteger(pid)) {
    throw new Error(`Cannot start the Kafka broker:\n${tailText(result.output)}`);
  }
  Deno.writeTextFileSync(paths.pidFile, `${pid}\n`);
  return pid;
}

/** Wait until the broker answers an admin request, giving up early if its process dies. */
async function waitForKafka(brokers: string[], pid: number, timeoutMs: number): Promise<boolean> {
  const { host, port } = parseBroker(brokers[0]);
  let dead = false;
  const ready = await waitFor(async () => {
    if (!isPidAlive(pid)) {
      dead = true;
      return true;
    }
    // The broker port opens only once the broker is ready; then confirm with a real request.
    return await isPortOpen(host, port, 500) && await isKafkaReachable(brokers);
  }, { timeoutMs, intervalMs: 250 });
  return ready && !dead;
}
