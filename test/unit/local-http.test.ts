// The CLI's loopback HTTP client (scripts/local-http.ts) against a real node:http server on a port it picks.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { callErrorCode, httpCall, httpJson, jsonOr } from '../../scripts/local-http.ts';

describe('httpCall', () => {
  let server: http.Server;
  let base = '';
  const seen: { method: string; body: string; type?: string }[] = [];
  before(async () => {
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        seen.push({ method: req.method!, body, type: req.headers['content-type'] });
        if (req.url === '/silent') return; // never answers
        if (req.url === '/missing') return void res.writeHead(404).end('no such thing');
        if (req.url === '/big') return void res.end('m'.repeat(64 * 1024));
        res.end(JSON.stringify({ got: body, n: 7 }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  it('sends a method, a body and its headers, and gives the status and the whole text', async () => {
    const r = await httpCall(`${base}/x`, {
      method: 'POST',
      body: '{"a":"é"}',
      headers: { 'Content-Type': 'application/json' },
    });
    assert.equal(r.status, 200);
    assert.ok(r.ok);
    assert.deepEqual(JSON.parse(r.text!), { got: '{"a":"é"}', n: 7 });
    assert.deepEqual(seen.at(-1), { method: 'POST', body: '{"a":"é"}', type: 'application/json' });
    assert.equal((await httpJson<{ n: number }>(`${base}/y`)).json.n, 7);
  });

  it('answers a 404 as not ok with its text, and cuts a body past maxBytes to null', async () => {
    const r = await httpCall(`${base}/missing`);
    assert.deepEqual(r, { ok: false, status: 404, text: 'no such thing' });
    assert.equal((await httpCall(`${base}/big`, { maxBytes: 1024 })).text, null);
    assert.equal((await httpCall(`${base}/big`)).text!.length, 64 * 1024);
  });

  it('rejects when no answer comes: refused, or past its signal, each with a code that says which', async () => {
    const silent = httpCall(`${base}/silent`, { signal: AbortSignal.timeout(150) });
    await assert.rejects(silent, (e) => callErrorCode(e) === 'no answer in time');
    // A port nothing listens on: the one just closed by a throwaway server.
    const probe = http.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => probe.once('listening', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    await assert.rejects(httpCall(`http://127.0.0.1:${port}/`), (e) => callErrorCode(e) === 'ECONNREFUSED');
  });

  it('jsonOr falls back on no body or not JSON', () => {
    assert.deepEqual(jsonOr('{"a":1}', {}), { a: 1 });
    assert.deepEqual(jsonOr(null, { none: true }), { none: true });
    assert.deepEqual(jsonOr('<html>', []), []);
  });
});
