// The shipped xiaozhi dialect against a xiaozhi server that needs the firmware's OTA check first and asks MCP
// questions (test/helpers/xiaozhi-ota-server.ts): the devices check in over HTTP once each (--provision-url, the
// firmware's configured OTA URL), connect where the answer says with the token it issued (any other is refused with
// 401), answer initialize and tools/list, and the run PASSes with the server's own counts matching. A server whose OTA
// check refuses stops the run before any load, naming the status.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startOtaServer, type OtaServer } from '../helpers/xiaozhi-ota-server.ts';
import { latestRun, runCli } from '../helpers/proc.ts';

const tmp = mkdtempSync(join(tmpdir(), 'wakestorm-ota-'));
const otaUrl = (s: OtaServer) => `${s.url.replace(/^ws/, 'http')}/api/ota/`;

describe('a xiaozhi server that needs the OTA check and asks MCP questions', { timeout: 300_000 }, () => {
  let server: OtaServer;
  let refusing: OtaServer;
  before(async () => {
    server = await startOtaServer();
    refusing = await startOtaServer({ otaStatus: 403 });
  });
  after(async () => {
    await server.close();
    await refusing.close();
  });
  /** A command whose devices' OTA check goes to the refusing server (--provision-url). */
  const checkRefused = (cmd: string[]) =>
    runCli(cmd.concat(['--profile', 'xiaozhi-esp32-button', '--provision-url', otaUrl(refusing), '--results', tmp]), {
      timeoutMs: 60_000,
    });

  it('20 devices check in once each, connect with the issued token, answer MCP, and PASS', async () => {
    const results = join(tmp, 'ok');
    const r = await runCli(
      [
        'run',
        'smoke',
        '--devices',
        '20',
        '--duration',
        '20s',
        '--wake',
        'once:1s-4s',
        '--profile',
        'xiaozhi-esp32-button',
      ].concat(['--server-url', server.url, '--provision-url', otaUrl(server), '--results', results, '--no-dashboard']),
      { timeoutMs: 150_000 },
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const m = latestRun(results).metrics;
    // One check per device, plus the pre-flight's; every channel opened with the token the check issued.
    assert.equal(server.counts.ota, 21);
    assert.equal(server.counts.refused, 0, 'no upgrade without the issued token');
    assert.equal(m.provision_latency?.values.count, 20);
    // The pre-flight's channel closes at once: every other one answered initialize and tools/list.
    assert.equal(server.counts.mcpAnswers, 2 * (server.counts.channels - 1), 'MCP answered on every device channel');
    assert.equal(m.sessions_completed?.values.count, server.counts.replies);
  });

  it('an OTA check the server refuses stops the run before any load, naming the status', async () => {
    const r = await checkRefused(['run', 'smoke', '--server-url', refusing.url]);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(
      r.stderr,
      /provision call POST http:\/\/127\.0\.0\.1:\d+\/api\/ota\/ answered HTTP 403 \(device not activated\)/,
    );
    assert.equal(refusing.counts.channels, 0);
  });

  it('capacity makes the check where --provision-url says, and stops before any load when it is refused', async () => {
    const channels = server.counts.channels;
    const r = await checkRefused(['capacity', '--server-url', server.url, '--max-devices', '4']);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    // Only the refusing server says this: the check went to the --provision-url, not to the server's own OTA.
    assert.match(r.stderr, /answered HTTP 403 \(device not activated\)/);
    assert.equal(server.counts.channels, channels, 'no device reached the server');
  });

  it('a server that answers the wake word before the user speaks FAILs on early_replies, both engines', async () => {
    // The shipped xiaozhi dialect's wake sends `listen detect` with the wake word's text (the firmware's 你好小智); a
    // server that takes it for the user's turn replies at once. Timed, that reply looked fast: a false PASS.
    const eager = await startOtaServer({ answersWakeWord: true });
    try {
      for (const engine of ['native', 'k6']) {
        const results = join(tmp, `eager-${engine}`);
        const r = await runCli(
          ['run', 'smoke', '--devices', '10', '--duration', '20s', '--wake', 'once:1s-4s', '--engine', engine].concat([
            '--profile',
            'xiaozhi-esp32',
            '--server-url',
            eager.url,
            '--provision-url',
            otaUrl(eager),
            '--results',
            results,
            '--no-dashboard',
          ]),
          { timeoutMs: 150_000 },
        );
        const { run, metrics } = latestRun<{ verdict: string; fail_reasons: string[] }>(results);
        assert.equal(r.code, 99, `${engine}: ${run.verdict} ${r.stdout.slice(-1200)}`);
        assert.equal(run.verdict, 'fail');
        assert.match(run.fail_reasons.join('; '), /early_replies.*answered before the user finished speaking/, engine);
        assert.ok((metrics.early_replies?.values.count ?? 0) >= 5, `${engine}: early replies counted`);
        // No early reply is timed as a response: the wake word's reply came ~0 ms after the wake, the real reply
        // 150 ms after the speech ended (plus the server's reading of it).
        const timed = metrics.response_latency?.values;
        assert.ok(!timed?.count || (timed.min ?? 0) >= 100, `${engine}: a response timed at ${timed?.min} ms`);
      }
    } finally {
      await eager.close();
    }
  });
});
