// `wakestorm server --workers N`: the protocol holds across worker processes (docs/protocol.md "Several workers"):
// one live link per device id, resume on any worker, /health and /metrics for the whole server, drain on SIGTERM.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { CLOSE } from '../../core/protocol.ts';
import { readFileSync } from 'node:fs';
import { processTree } from '../../scripts/proc-stats.ts';
import { exited, freePort, spawnCli, waitFor } from '../helpers/proc.ts';

type Msg = { type: string; [k: string]: unknown };

/** A device on /ws/<id>: every message it got, its close code, and which worker served it (c-w<N>-… ids). */
class Link {
  readonly msgs: Msg[] = [];
  binary = 0;
  code: number | null = null;
  readonly ws: WebSocket;
  readonly opened: Promise<Msg>;

  constructor(url: string) {
    this.ws = new WebSocket(url);
    this.ws.on('message', (d, isBinary) => {
      if (isBinary) this.binary++;
      else this.msgs.push(JSON.parse(String(d)) as Msg);
    });
    this.ws.on('close', (c) => (this.code = c));
    this.ws.on('error', () => {});
    this.opened = this.next('connected');
  }

  async next(type: string, from = 0, timeoutMs = 5000): Promise<Msg> {
    let found: Msg | undefined;
    await waitFor(() => !!(found = this.msgs.slice(from).find((m) => m.type === type)), timeoutMs, type);
    return found!;
  }

  send(m: object): void {
    this.ws.send(JSON.stringify(m));
  }

  async worker(): Promise<string> {
    return /^c-(w\d+)-/.exec(String((await this.opened).connection_id))![1]!;
  }
}

/** The pid of worker `index` under the CLI's process tree (cluster.fork gives each its WAKESTORM_WORKER). */
function workerPid(root: number, index: number): number {
  const pid = processTree(root).find((p) => {
    try {
      return readFileSync(`/proc/${p}/environ`, 'utf8').split('\0').includes(`WAKESTORM_WORKER=${index}`);
    } catch {
      return false;
    }
  });
  assert.ok(pid, `worker ${index} under ${root}`);
  return pid;
}

describe('reference server with --workers 2', () => {
  let port = 0;
  let server: ReturnType<typeof spawnCli>;
  const base = () => `ws://127.0.0.1:${port}/ws`;
  before(async () => {
    port = await freePort();
    server = spawnCli([
      'server',
      '--workers',
      '2',
      '--port',
      String(port),
      '--stt-ms',
      '50',
      '--llm-ms',
      '50',
      '--tts-ms',
      '50',
      '--drain-ms',
      '2000',
    ]);
    await waitFor(() => /listening on .* with 2 workers/.test(server.output()), 20_000, 'two workers listening');
  });
  after(() => {
    if (server.exitCode === null) process.kill(-server.pid!, 'SIGKILL');
  });

  it('serves on both workers and keeps one live link per device id across them (4409 to the old one)', async () => {
    const first = new Link(`${base()}/dev-a`);
    const w0 = await first.worker();
    // Each new link for the same device replaces the last; the connections alternate between the workers.
    const links = [first];
    for (let i = 0; i < 4; i++) {
      const l = new Link(`${base()}/dev-a`);
      await l.opened;
      links.push(l);
    }
    const workers = await Promise.all(links.map((l) => l.worker()));
    assert.ok(new Set(workers).size === 2, `links served by ${workers.join(', ')}`);
    assert.ok(workers.some((w) => w !== w0));
    await waitFor(() => links.slice(0, -1).every((l) => l.code !== null), 5000, 'every older link closed');
    for (const l of links.slice(0, -1)) assert.equal(l.code, CLOSE.REPLACED);
    assert.equal(links.at(-1)!.code, null);
    const health = (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as Record<string, unknown>;
    assert.equal(health.workers, 2);
    assert.equal(health.connections, 1);
    links.at(-1)!.ws.close();
  });

  it('resumes a conversation on the other worker, mid-reply', async () => {
    let link = new Link(`${base()}/dev-b`);
    const home = await link.worker();
    const token = String((await link.opened).resume_token);
    link.send({ type: 'hotword_detected', wake_id: 'w1' });
    const started = await link.next('session_started');
    link.send({ type: 'end_of_speech', session_id: started.session_id });
    await link.next('tts_stream_start');
    // The link dies mid-reply; the device comes back with its token until a link lands on the other worker.
    let resumedElsewhere: Link | null = null;
    for (let i = 0; i < 6 && !resumedElsewhere; i++) {
      link.ws.terminate();
      link = new Link(`${base()}/dev-b?resume=${token}`);
      const c = await link.opened;
      assert.equal(c.resumed, true, JSON.stringify(c));
      assert.equal((c.session as { session_id: string }).session_id, started.session_id);
      if ((await link.worker()) !== home) resumedElsewhere = link;
    }
    assert.ok(resumedElsewhere, 'a resume landed on the other worker');
    // The reply plays again from its start there, and the conversation completes.
    const end = await resumedElsewhere.next('tts_stream_end', 0, 15_000);
    assert.ok(
      resumedElsewhere.binary >= Number(end.chunks),
      `${resumedElsewhere.binary} of ${String(end.chunks)} chunks`,
    );
    resumedElsewhere.send({ type: 'playback_complete', session_id: started.session_id });
    const done = await resumedElsewhere.next('session_end');
    assert.equal(done.reason, 'complete');
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(metrics, /voice_resumes_total\{result="hit"\} [1-9]/);
    assert.match(metrics, /voice_sessions_total\{outcome="complete"\} 1\b/);
    // Both workers' numbers are in one answer: a session started on one, ended on the other, is counted once.
    assert.match(metrics, /voice_sessions_started_total 1\b/);
    resumedElsewhere.ws.close();
  });

  it('answers /health without a stopped worker, and counts it silent', async () => {
    const stopped = workerPid(server.pid!, 1);
    process.kill(stopped, 'SIGSTOP');
    try {
      // The primary hands connections to the workers in turn: those given to the stopped one hang, the others answer
      // within the primary's 2 s wait for the silent worker.
      const answers: Record<string, unknown>[] = [];
      for (let i = 0; i < 4 && answers.length === 0; i++) {
        const t0 = Date.now();
        const r = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(4000) }).catch(
          () => null,
        );
        if (!r) continue;
        answers.push((await r.json()) as Record<string, unknown>);
        assert.ok(Date.now() - t0 < 3500, `answered in ${Date.now() - t0} ms`);
      }
      assert.equal(answers.length, 1, 'a worker that runs answered');
      assert.equal(answers[0]!.workers, 1);
      assert.equal(answers[0]!.workers_silent, 1);
    } finally {
      process.kill(stopped, 'SIGCONT');
    }
    await waitFor(
      async () =>
        ((await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as { workers: number }).workers === 2,
      10_000,
      'both workers answer again',
    );
  });

  it('drains every worker on SIGTERM: idle links get 1012 and the server exits 0', async () => {
    const links = [new Link(`${base()}/dev-c`), new Link(`${base()}/dev-d`), new Link(`${base()}/dev-e`)];
    const workers = await Promise.all(links.map((l) => l.worker()));
    assert.equal(new Set(workers).size, 2, workers.join(', '));
    const t0 = Date.now();
    server.kill('SIGTERM');
    assert.equal(await exited(server, 10_000), 0);
    assert.ok(Date.now() - t0 < 5000);
    await waitFor(() => links.every((l) => l.code !== null), 3000, 'links closed');
    for (const l of links) assert.equal(l.code, CLOSE.SERVICE_RESTART);
  });
});

describe('reference server with --workers 2 --balance kernel', () => {
  let port = 0;
  let server: ReturnType<typeof spawnCli>;
  before(async () => {
    port = await freePort();
    server = spawnCli(['server', '--workers', '2', '--balance', 'kernel', '--port', String(port)]);
    await waitFor(() => /with 2 workers, balance kernel/.test(server.output()), 20_000, 'two workers listening');
  });
  after(() => {
    if (server.exitCode === null) process.kill(-server.pid!, 'SIGKILL');
  });

  it('lets a running worker take every connection while the other is stopped', async () => {
    // With 'rr' the primary would deal every other connection to the stopped worker, where it hangs (the /health
    // test above relies on that); with 'kernel' only a worker that accepts gets a connection.
    const stopped = workerPid(server.pid!, 1);
    process.kill(stopped, 'SIGSTOP');
    const links: Link[] = [];
    try {
      for (let i = 0; i < 8; i++) links.push(new Link(`ws://127.0.0.1:${port}/ws/k-${i}`));
      const workers = await Promise.all(links.map((l) => l.worker()));
      assert.deepEqual(new Set(workers), new Set(['w0']), workers.join(', '));
    } finally {
      process.kill(stopped, 'SIGCONT');
    }
    // One live link per device id still holds across the workers: the same id again replaces its link (4409).
    const again = new Link(`ws://127.0.0.1:${port}/ws/k-0`);
    await again.opened;
    await waitFor(() => links[0]!.code !== null, 5000, 'the older link closed');
    assert.equal(links[0]!.code, CLOSE.REPLACED);
    for (const l of [...links, again]) l.ws.close();
  });

  it('refuses an unknown --balance in one line', () => {
    const r = spawnCli(['server', '--workers', '2', '--balance', 'random']);
    return exited(r, 10_000).then((code) => {
      assert.equal(code, 2);
      assert.match(r.output(), /--balance must be 'rr' or 'kernel', got 'random'/);
    });
  });
});

describe('reference server with --workers 2 --max-connections 3', () => {
  it('caps the whole server, not each worker', async () => {
    const port = await freePort();
    const server = spawnCli(['server', '--workers', '2', '--max-connections', '3', '--port', String(port)]);
    try {
      await waitFor(() => /with 2 workers/.test(server.output()), 20_000, 'two workers listening');
      const links: Link[] = [];
      for (let i = 0; i < 3; i++) {
        links.push(new Link(`ws://127.0.0.1:${port}/ws/cap-${i}`));
        await links.at(-1)!.opened;
      }
      // Both workers hold some (rr deals them in turn): a per-worker share of 2 would let a fourth in.
      assert.equal(new Set(await Promise.all(links.map((l) => l.worker()))).size, 2);
      await new Promise((r) => setTimeout(r, 750));
      const fourth = new Link(`ws://127.0.0.1:${port}/ws/cap-3`);
      fourth.opened.catch(() => {}); // refused before `connected`
      await waitFor(() => fourth.code !== null, 5000, 'the fourth link closed');
      assert.equal(fourth.code, CLOSE.TRY_AGAIN_LATER);
      assert.ok(links.every((l) => l.code === null));
      for (const l of links) l.ws.close();
    } finally {
      if (server.exitCode === null) process.kill(-server.pid!, 'SIGKILL');
    }
  });
});
