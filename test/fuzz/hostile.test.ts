// The reference server under hostile clients and careless operators: slow readers are cut by the progress of their
// reads (the kernel's send queue included), unfinished upgrades time out and are capped, bound tokens stop device
// takeover, a second signal forces the close, client close codes stay a bounded label. Loopback only, bounded.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { ServerConfig } from '../../server/config.ts';
import { startVoiceServer, type VoiceServer } from '../../server/server.ts';
import { CLI, freePort } from '../helpers/proc.ts';
import { serverSendQueues } from '../../scripts/proc-stats.ts';
import { ProtocolClient, UTTERANCE, connectDevice, upgradeStatus } from '../../scripts/protocol-client.ts';
import { metricValue } from '../../scripts/proc-sampler.ts';

const servers: VoiceServer[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
});
async function server(overrides: Partial<ServerConfig> = {}): Promise<VoiceServer> {
  const s = await startVoiceServer({ port: 0, sttMs: 0, llmMs: 0, ttsMs: 0, ttsPace: 'burst', ...overrides });
  servers.push(s);
  return s;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const metrics = async (s: VoiceServer) => (await fetch(`${s.httpUrl}/metrics`)).text();

/** One full conversation on a well-behaved device; it must end complete. */
async function conversation(c: ProtocolClient, n: number): Promise<void> {
  assert.equal(await c.conversation(`good-${n}`, { replyTimeoutMs: 10_000 }), 'complete');
}

describe('slow readers', () => {
  it('are cut by the progress of their reads, with Node and kernel queues under 256 KiB per socket, while a good device talks on', async () => {
    // Node's own buffer guard alone (1 MiB) would let the kernel hold far more: the unacknowledged-bytes guard decides.
    const s = await server({
      audioBurstBytes: 1 << 30,
      audioRateBytesPerS: 1 << 30,
      textBurst: 1e6,
      textRatePerS: 1e6,
    });
    const N = 40;
    const slow: ProtocolClient[] = [];
    for (let i = 0; i < N; i++) {
      const { c } = await connectDevice(s.wsUrl, `slow-${i}`);
      // Stops reading: the kernel receive buffer fills, then the server's send queue would grow.
      (c.ws as unknown as { _socket: { pause(): void } })._socket.pause();
      slow.push(c);
    }
    const { c: good } = await connectDevice(s.wsUrl, 'good');
    let maxQueue = 0;
    let sessions = 0;
    const deadline = Date.now() + 15_000;
    const talk = (async () => {
      while (Date.now() < deadline) await conversation(good, sessions++);
    })();
    // Every slow device asks for reply after reply (a wake barges in on the last one).
    for (let round = 0; Date.now() < deadline; round++) {
      for (const c of slow) {
        if (c.closeCode !== null || c.ws.readyState !== c.ws.OPEN) continue;
        c.send({ type: 'hotword_detected', wake_id: `w-${round}` });
        c.ws.send(Buffer.alloc(16384, 1));
        c.ws.send(Buffer.alloc(16384, 1));
      }
      await sleep(200);
      maxQueue = Math.max(maxQueue, ...serverSendQueues(s.port), 0);
    }
    await talk;
    const cut = metricValue(await metrics(s), 'voice_slow_readers_cut_total');
    console.log(
      `slow readers: ${cut} of ${N} cut; largest server-side kernel send queue ${maxQueue} bytes; good device completed ${sessions} sessions`,
    );
    assert.equal(cut, N, 'every slow reader is cut');
    assert.ok(maxQueue < 256 * 1024, `kernel send queue ${maxQueue} bytes stays under 256 KiB`);
    assert.ok(sessions >= 3, `the good device kept talking (${sessions} sessions)`);
    assert.equal(good.closeCode, null);
    for (const c of slow) c.close();
    good.close();
  });
});

describe('a storm of hostile clients', () => {
  it('malformed frames, invalid UTF-8, JSON bombs, wrong types, floods and churn: each gets its close code or error, /health answers, RSS stays bounded, a good device talks on', async () => {
    // The good device speaks faster than real time (tests need not wait): audio limits are lifted, text limits kept.
    const s = await server({ audioBurstBytes: 1 << 30, audioRateBytesPerS: 1 << 30 });
    const { c: good } = await connectDevice(s.wsUrl, 'good');
    const deadline = Date.now() + 10_000;
    let sessions = 0;
    const talk = (async () => {
      // At a human pace (a conversation every 300 ms at most): under the text rate limit the flood trips.
      while (Date.now() < deadline) {
        await conversation(good, sessions++);
        await sleep(300);
      }
    })();
    const seen: Record<string, number[]> = {};
    const note = (k: string, code: number) => (seen[k] ??= []).push(code);
    const attack = async (k: string, id: string, act: (c: ProtocolClient) => void) => {
      const { c } = await connectDevice(s.wsUrl, id);
      act(c);
      note(k, await c.waitClose(8000).catch(() => -1));
    };
    // 30,000 levels of nesting in 60 KB, under the 64 KiB frame limit, in a field that must be a number.
    const bomb = `{"type":"ping","id":${'['.repeat(30_000)}${']'.repeat(30_000)},"t":1}`;
    let rssMax = 0;
    let healthFailures = 0;
    for (let round = 0; Date.now() < deadline - 2000; round++) {
      await Promise.all([
        // Invalid UTF-8 in a text frame: 1007.
        attack('utf8', `u-${round}`, (c) => c.ws.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false })),
        // A frame over 64 KiB: 1009.
        attack('big', `b-${round}`, (c) => c.ws.send('x'.repeat(70_000))),
        // Deeply nested JSON under the size limit and wrong types in every field: errors, then 1008 after ten.
        attack('bombs', `j-${round}`, (c) => {
          for (let i = 0; i < 12; i++)
            c.ws.send(i % 2 ? bomb : JSON.stringify({ type: 'hotword_detected', wake_id: { a: [1] }, t: 'soon' }));
        }),
        // A flood of pings: rate-limited, then 1008.
        attack('flood', `f-${round}`, (c) => {
          for (let i = 0; i < 400; i++) c.send({ type: 'ping', id: i, t: 1 });
        }),
        // A flood of wakes: rate-limited, then 1008.
        attack('wakes', `h-${round}`, (c) => {
          for (let i = 0; i < 400; i++) c.send({ type: 'hotword_detected', wake_id: `w-${i}`, t: 1 });
        }),
        // One message in many fragments that add up past 64 KiB: 1009 (the limit is on the message, not the frame).
        attack('fragments', `g-${round}`, (c) => {
          for (let i = 0; i < 9; i++) c.ws.send('x'.repeat(8192), { fin: false, binary: false });
          c.ws.send('x', { fin: true, binary: false });
        }),
        // Connect/close churn.
        ...Array.from({ length: 10 }, async (_, i) => {
          const { c } = await connectDevice(s.wsUrl, `churn-${round}-${i}`);
          c.close();
        }),
      ]);
      const h = await fetch(`${s.httpUrl}/health`, { signal: AbortSignal.timeout(1000) }).catch(() => null);
      if (!h || h.status !== 200) healthFailures++;
      rssMax = Math.max(rssMax, process.memoryUsage().rss);
    }
    await talk;
    console.log(
      `hostile storm: ${Object.entries(seen)
        .map(([k, v]) => `${k} ${v.length}×${[...new Set(v)].join('/')}`)
        .join(', ')}; rss max ${(rssMax / 2 ** 20).toFixed(0)} MiB; good device ${sessions} sessions`,
    );
    assert.deepEqual([...new Set(seen.utf8)], [1007]);
    assert.deepEqual([...new Set(seen.big)], [1009]);
    assert.deepEqual([...new Set(seen.bombs)], [1008]);
    assert.deepEqual([...new Set(seen.flood)], [1008]);
    assert.deepEqual([...new Set(seen.wakes)], [1008]);
    assert.deepEqual([...new Set(seen.fragments)], [1009]);
    assert.equal(healthFailures, 0, '/health answered every time');
    // Measured ~150-200 MiB for this test process (server, clients and test runner together).
    assert.ok(rssMax < 400 * 2 ** 20, `rss ${(rssMax / 2 ** 20).toFixed(0)} MiB`);
    assert.ok(sessions >= 3);
    assert.equal(good.closeCode, null);
    good.close();
  });
});

describe('unfinished upgrades', () => {
  function halfUpgrade(port: number): Promise<{ sock: Socket; closedAfterMs: Promise<number> }> {
    return new Promise((resolve, reject) => {
      const t0 = Date.now();
      const sock = connect(port, '127.0.0.1', () => {
        sock.write('GET /ws/x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n');
        resolve({ sock, closedAfterMs: new Promise((r) => sock.once('close', () => r(Date.now() - t0))) });
      });
      // Read (and drop) what comes back, or the server's 408 and FIN are never seen.
      sock.resume();
      sock.on('error', () => {});
      sock.once('error', reject);
    });
  }

  it('time out in a few seconds, and past the cap are refused at once; a real device still gets in', async () => {
    const s = await server({ upgradeTimeoutMs: 2000, maxPendingUpgrades: 50 });
    const pending = await Promise.all(Array.from({ length: 80 }, () => halfUpgrade(s.port)));
    const times = await Promise.all(pending.map((p) => p.closedAfterMs));
    const refused = times.filter((t) => t < 1000).length;
    console.log(
      `slowloris: 80 half-sent upgrades, ${refused} refused at once (cap 50), the rest closed after ${Math.max(...times)} ms at most`,
    );
    assert.ok(refused >= 30, `${refused} refused past the cap`);
    assert.ok(Math.max(...times) < 5000, `every one closed within 5 s (${Math.max(...times)} ms)`);
    assert.ok(metricValue(await metrics(s), 'voice_upgrades_rejected_total', 'reason="too_many_pending"') >= 30);
    const { c } = await connectDevice(s.wsUrl, 'after-slowloris');
    c.close();
  });
});

describe('bound tokens', () => {
  it('let a token claim, and so replace, only the device ids it is bound to', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wakestorm-tokens-'));
    const file = join(dir, 'tokens');
    writeFileSync(file, '# token device-id-pattern\ntoken-alice-123 alice-*\ntoken-bob-4567 bob\n');
    const { readTokensFile } = await import('../../server/config.ts');
    const s = await server({ tokens: readTokensFile(file) });
    const auth = (t: string) => ({ headers: { Authorization: `Bearer ${t}` } });
    const { c: alice } = await connectDevice(s.wsUrl, 'alice-1', '', auth('token-alice-123'));
    // Bob's token cannot open Alice's id: 403 before any upgrade, and Alice stays connected.
    assert.equal(await upgradeStatus(`${s.wsUrl}/ws/alice-1`, { Authorization: 'Bearer token-bob-4567' }), 403);
    assert.equal(await upgradeStatus(`${s.wsUrl}/ws/bob-2`, { Authorization: 'Bearer token-bob-4567' }), 403);
    assert.equal(await upgradeStatus(`${s.wsUrl}/ws/bob`, { Authorization: 'Bearer token-bob-4567' }), 101);
    await sleep(100);
    assert.equal(alice.closeCode, null, 'not replaced by a stranger');
    // On /ws the id comes in hello: a hello for an id the token does not cover is closed 1008.
    const hello = new ProtocolClient(`${s.wsUrl}/ws`, auth('token-bob-4567'));
    await hello.opened;
    hello.send({ type: 'hello', device_id: 'alice-1', protocol: 1 });
    assert.equal(await hello.waitClose(), 1008);
    assert.equal(alice.closeCode, null);
    // Its own token may replace its own ghost (4409), as the protocol promises.
    const { c: again } = await connectDevice(s.wsUrl, 'alice-1', '', auth('token-alice-123'));
    assert.equal(await alice.waitClose(), 4409);
    again.close();
  });
});

describe('signals and labels', () => {
  it('a second SIGTERM during drain closes every socket with 1001 at once and exits', async () => {
    const port = await freePort();
    const p = spawn(
      process.execPath,
      [CLI, 'server', '--port', String(port), '--drain-ms', '60000', '--stt-ms', '20000'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    while (!out.includes('listening')) await sleep(50);
    const { c } = await connectDevice(`ws://127.0.0.1:${port}`, 'busy');
    // A session in flight keeps the drain waiting (STT takes 20 s).
    c.send({ type: 'hotword_detected', wake_id: 'w-1' });
    const st = await c.next('session_started');
    c.sendAudio(UTTERANCE);
    c.send({ type: 'end_of_speech', session_id: st.session_id });
    await sleep(200);
    p.kill('SIGTERM');
    await sleep(500);
    assert.equal(c.closeCode, null, 'the first signal drains: the active session may finish');
    const t0 = Date.now();
    p.kill('SIGTERM');
    assert.equal(await c.waitClose(3000), 1001);
    const code = await new Promise<number | null>((r) => p.once('exit', (c2) => r(c2)));
    assert.equal(code, 0);
    assert.ok(Date.now() - t0 < 3000, 'exits at once');
  });

  it('keeps client close codes a bounded label: the known ones, then their RFC 6455 range', async () => {
    const s = await server();
    for (const code of [4000, 4001, 4999, 3000, 3999, 1000]) {
      const { c } = await connectDevice(s.wsUrl, `closer-${code}`);
      c.ws.close(code);
      await c.waitClose();
    }
    await sleep(100);
    const text = await metrics(s);
    const codes = [...text.matchAll(/voice_connections_closed_total\{code="([^"]+)"\}/g)].map((m) => m[1]);
    // Six distinct codes, three labels: 4000-4999 are 4xxx (application), 3000-3999 3xxx (registered).
    assert.deepEqual(codes.sort(), ['1000', '3xxx', '4xxx']);
  });

  it('warns on a non-loopback listen address without a token; with one, /metrics and /health need it too', async () => {
    const port = await freePort();
    const p = spawn(process.execPath, [CLI, 'server', '--host', '0.0.0.0', '--port', String(port)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    while (!out.includes('listening')) await sleep(50);
    p.kill('SIGTERM');
    await new Promise((r) => p.once('exit', r));
    assert.match(err, /^wakestorm server: warning: listening on 0\.0\.0\.0 without a token/m);
    const s = await server({ host: '0.0.0.0', tokens: ['sekret-token-1'] });
    const base = `http://127.0.0.1:${s.port}`;
    assert.equal((await fetch(`${base}/metrics`)).status, 401);
    assert.equal((await fetch(`${base}/health`)).status, 401);
    assert.equal((await fetch(`${base}/health`, { headers: { Authorization: 'Bearer sekret-token-1' } })).status, 200);
    assert.equal((await fetch(`${base}/metrics?token=sekret-token-1`)).status, 200);
  });
});
