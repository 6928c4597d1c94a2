// The stack for real: reference server + toxiproxy-server + the 'voice' proxy, on free loopback ports.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { CLOSE } from '../../core/protocol.ts';
import { startStack, type Stack } from '../../scripts/stack.ts';
import { pickFreePort } from '../../scripts/process-control.ts';
import { exited, portClosed, runCli, spawnCli, waitFor } from '../helpers/proc.ts';
import { ProtocolClient } from '../../scripts/protocol-client.ts';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Round-trip times of n pings in turn, fastest first. */
async function pingRtts(c: ProtocolClient, n: number): Promise<number[]> {
  const rtts: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    c.send({ type: 'ping', id: i });
    await c.next('pong');
    rtts.push(performance.now() - t0);
  }
  return rtts.sort((a, b) => a - b);
}

describe('startStack', () => {
  let stack: Stack;
  let ports: number[];
  before(async () => {
    ports = [await pickFreePort(), await pickFreePort()];
    stack = await startStack({
      serverPort: ports[0],
      toxiproxyPort: ports[1],
      proxyPorts: { voice: 0 },
      server: { sttMs: 10 },
    });
  });
  after(async () => stack.stop());

  it('brings up each part healthy', async () => {
    assert.equal((await fetch(`${stack.serverHttpUrl}/health`)).status, 200);
    const v = await (await fetch(`${stack.toxiproxyUrl}/version`)).text();
    assert.match(v, /2\.12\.0/);
    const proxies = (await (await fetch(`${stack.toxiproxyUrl}/proxies`)).json()) as Record<
      string,
      { upstream: string; enabled: boolean }
    >;
    assert.equal(proxies.voice?.enabled, true);
    assert.equal(proxies.voice?.upstream, `127.0.0.1:${ports[0]}`);
  });

  it('carries a hello through the proxy, slows with a latency toxic, and closes when the proxy is disabled', async () => {
    const c = new ProtocolClient(`${stack.targetUrl}/ws`);
    await c.opened;
    c.send({ type: 'hello', device_id: 'through-proxy', protocol: 1 });
    assert.equal((await c.next('connected')).client_id, 'through-proxy');
    const base = await pingRtts(c, 5);
    await stack.toxiproxy!.addToxic('voice', {
      name: 'lat',
      type: 'latency',
      stream: 'downstream',
      toxicity: 1,
      attributes: { latency: 100, jitter: 0 },
    });
    let slowed: number[];
    try {
      slowed = await pingRtts(c, 5);
    } finally {
      await stack.toxiproxy!.reset();
    }
    // The toxic holds every pong 100 ms, so even the fastest round trip pays it; the
    // base round trip's own noise (a loaded box) is not added on top, so compare the
    // fastest of each rather than the base plus 100.
    const ms = (r: number[]) => r.map((x) => x.toFixed(1)).join(' ');
    assert.ok(base[0]! < 100 && slowed[0]! >= 100, `rtt ${ms(base)} -> ${ms(slowed)} ms with 100 ms`);
    const t0 = Date.now();
    await stack.toxiproxy!.setEnabled('voice', false);
    const code = await c.waitClose(3000);
    assert.equal(code, CLOSE.ABNORMAL, 'a cut is a close with no close frame');
    assert.ok(Date.now() - t0 < 2000);
    await stack.toxiproxy!.setEnabled('voice', true);
  });

  it("wakestorm toxic adds, lists and removes faults by hand, keeping Toxiproxy's own errors", async () => {
    const T = ['toxic', '--toxiproxy-url', stack.toxiproxyUrl];
    const add = await runCli([...T, 'add', 'latency', 'latency=120', 'jitter=10', '--stream', 'both']);
    assert.equal(add.code, 0, add.stderr);
    const toxics = (await (await fetch(`${stack.toxiproxyUrl}/proxies/voice/toxics`)).json()) as {
      name: string;
      attributes: { latency: number };
    }[];
    assert.deepEqual(toxics.map((t) => t.name).sort(), ['manual-latency-downstream', 'manual-latency-upstream']);
    assert.equal(toxics[0]!.attributes.latency, 120);
    const dup = await runCli([...T, 'add', 'latency', '--stream', 'upstream']);
    assert.equal(dup.code, 1);
    assert.match(dup.stderr, /Toxiproxy: POST \/proxies\/voice\/toxics -> 409: toxic already exists/);
    const bad = await runCli([...T, 'add', 'latency', 'lag=5']);
    assert.match(bad.stderr, /has no param "lag"/);
    const list = await runCli([...T, 'list']);
    assert.match(list.stdout, /manual-latency-upstream\s+latency upstream/);
    assert.equal((await runCli([...T, 'remove'])).code, 0);
    assert.deepEqual(await (await fetch(`${stack.toxiproxyUrl}/proxies/voice/toxics`)).json(), []);
    const cut = await runCli([...T, 'cut', '--for', '300ms']);
    assert.match(cut.stdout, /restored/);
    const p = (await (await fetch(`${stack.toxiproxyUrl}/proxies/voice`)).json()) as { enabled: boolean };
    assert.equal(p.enabled, true);
  });

  it('stops with nothing left running or listening, and no toxic applied', async () => {
    await stack.toxiproxy!.addToxic('voice', {
      name: 'stay',
      type: 'latency',
      stream: 'upstream',
      toxicity: 1,
      attributes: { latency: 10, jitter: 0 },
    });
    const pids = [stack.serverPid!, stack.toxiproxyPid!];
    const listen = stack.proxies.voice!.listenPort;
    await stack.stop();
    for (const pid of pids) assert.equal(alive(pid), false, `pid ${pid} gone`);
    for (const p of [...ports, listen]) assert.equal(await portClosed(p), true, `port ${p} closed`);
  });
});

describe('wakestorm stack (CLI)', () => {
  it('prints the k6 line, and tears everything down on SIGTERM, the device engine too', async () => {
    const [sp, tp, pp] = [await pickFreePort(), await pickFreePort(), await pickFreePort()];
    const p = spawnCli([
      'stack',
      '--server-port',
      String(sp),
      '--toxiproxy-port',
      String(tp),
      '--proxy-port',
      String(pp),
    ]);
    await waitFor(() => p.output().includes('Ctrl-C stops everything'), 30_000, 'stack up');
    assert.match(
      p.output(),
      new RegExp(
        `run -e TARGET_URL=ws://127.0.0.1:${pp} -e TOXIPROXY_URL=http://127.0.0.1:${tp} -e CONTROL_URL=http://127.0.0.1:\\d+ -e SERVER_URL=http://127.0.0.1:${sp} -e ENGINE_URL=ws://127.0.0.1:\\d+/control scenarios/smoke.ts`,
      ),
    );
    const enginePid = Number(/device engine \S+ \(pid (\d+)\)/.exec(p.output())![1]);
    assert.ok(alive(enginePid));
    p.kill('SIGTERM');
    assert.equal(await exited(p, 20_000), 0);
    assert.equal(alive(enginePid), false, 'the engine stopped with the stack');
    for (const port of [sp, tp, pp]) assert.equal(await portClosed(port), true, `port ${port} closed`);
    const left = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes(`-port ${tp}`) || l.includes(`--port ${sp}`));
    assert.deepEqual(left, []);
  });

  it('leaves nothing behind even when its parent is SIGKILLed', async () => {
    const { spawn } = await import('node:child_process');
    const code = `import('./scripts/stack.ts').then(async (m) => { const s = await m.startStack({ serverPort: 0, toxiproxyPort: ${await pickFreePort()}, proxyPorts: { voice: 0 } }); console.log('PIDS', s.serverPid, s.toxiproxyPid); });`;
    const p = spawn(process.execPath, ['--import', 'tsx', '-e', code], {
      cwd: new URL('../../', import.meta.url).pathname,
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    await waitFor(() => out.includes('PIDS'), 30_000, 'stack up in the child');
    const pids = out.trim().split(' ').slice(1).map(Number);
    p.kill('SIGKILL');
    await waitFor(() => pids.every((pid) => !alive(pid)), 10_000, 'server and toxiproxy to die with their parent');
  });

  it('picks listen ports below the ephemeral range, so no outgoing connection can hold one, each once', async () => {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    const ports = await Promise.all(Array.from({ length: 20 }, () => pickFreePort()));
    assert.equal(new Set(ports).size, ports.length, `a port handed out twice: ${ports}`);
    for (const p of ports) assert.ok(p >= 1024 && p < low, `port ${p} is in the ephemeral range (from ${low})`);
  });

  it('fails with one line when a port is taken', async () => {
    const { createServer } = await import('node:net');
    const blocker = createServer().listen(0, '127.0.0.1');
    await new Promise((r) => blocker.once('listening', r));
    const taken = (blocker.address() as { port: number }).port;
    const r = await runCli([
      'stack',
      '--toxiproxy-port',
      String(taken),
      '--server-port',
      String(await pickFreePort()),
      '--proxy-port',
      String(await pickFreePort()),
    ]);
    blocker.close();
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`port ${taken} is already in use, needed for the Toxiproxy API`));
    assert.equal(r.stderr.trim().split('\n').length, 1);
  });
});
