// `wakestorm server` as a user runs it: flags and env vars, one-line errors with exit 2, and the SIGTERM drain.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CLOSE } from '../../core/protocol.ts';
import { exited, freePort, portClosed, runCli, spawnCli, waitFor } from '../helpers/proc.ts';
import { connectDevice } from '../../scripts/protocol-client.ts';

describe('wakestorm server', () => {
  for (const [args, pattern] of [
    [['--port', 'abc'], /--port must be an integer/],
    [['--port', '70000'], /--port must be between 0 and 65535/],
    [['--tts-pace', 'slow'], /--tts-pace must be 'realtime' or 'burst'/],
    [['--stt-ms', '-5'], /--stt-ms must be between/],
    [['--tokens-file', '/nonexistent/tokens'], /--tokens-file \/nonexistent\/tokens: cannot read it/],
    [['--frobnicate'], /unknown option '--frobnicate'/],
  ] as [string[], RegExp][]) {
    it(`rejects ${args.join(' ')} with one line and exit 2`, async () => {
      const r = await runCli(['server', ...args]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, pattern);
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    });
  }

  it('reads env vars, and a port in use is a one-line error', async () => {
    const port = await freePort();
    const a = spawnCli(['server'], { WAKESTORM_PORT: String(port), WAKESTORM_KEEPALIVE_MS: '1234' });
    await waitFor(() => a.output().includes('listening'), 15_000, 'server start');
    assert.match(a.output(), /keepalive=1234ms/);
    const b = await runCli(['server', '--port', String(port)]);
    assert.equal(b.code, 1);
    assert.match(b.stderr, /port already in use/);
    a.kill('SIGKILL');
    await exited(a);
  });

  it('drains on SIGTERM: devices get 1012, exit 0, nothing left listening', async () => {
    const port = await freePort();
    const p = spawnCli(['server', '--port', String(port), '--drain-ms', '1000']);
    await waitFor(() => p.output().includes('listening'), 15_000, 'server start');
    const { c } = await connectDevice(`ws://127.0.0.1:${port}`, 'term');
    p.kill('SIGTERM');
    assert.equal(await c.waitClose(5000), CLOSE.SERVICE_RESTART);
    assert.equal(await exited(p), 0);
    assert.equal(await portClosed(port), true);
    assert.match(p.output(), /drained/);
  });
});
