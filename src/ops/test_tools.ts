/**
 * Programs the test suite needs besides the services: Debian's Chromium for the Swagger UI browser test,
 * docker-compose (v1) to validate compose.yaml offline, and Caddy to validate the proxy's deploy/Caddyfile. Installed once, only when missing, by `deno task test`
 * itself, so the README's test command works on a fresh machine and CI runs exactly that command.
 */
import { aptInstall, commandExists, type Log } from "./local_process.ts";

export async function ensureTestTools(log: Log): Promise<void> {
  if (!commandExists("chromium")) await aptInstall(["chromium"], log);
  if (!commandExists("docker-compose")) {
    // Optional: without it the compose test checks the file's structure only.
    await aptInstall(["docker-compose"], log).catch((error) =>
      log(
        `docker-compose unavailable (${(error as Error).message.split("\n")[0]}); its check will be skipped`,
      )
    );
  }
  if (!commandExists("caddy")) {
    // Optional too: without it the Caddyfile test checks its text only. Debian does not start the service
    // in a container (no systemd); the tests run `caddy adapt` and `caddy validate`, never a server.
    await aptInstall(["caddy"], log).catch((error) =>
      log(`caddy unavailable (${(error as Error).message.split("\n")[0]}); its check will be skipped`)
    );
  }
}
