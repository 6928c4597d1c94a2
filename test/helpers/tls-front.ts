// TLS in front of a plain server, as production voice servers sit behind a TLS terminator (nginx, a load balancer):
// a private CA and a certificate for localhost / 127.0.0.1 / ::1 made by the real openssl, and a Node TLS server on
// loopback that passes each decrypted connection through to the plain server's port.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:tls';

export interface Pki {
  dir: string;
  /** The CA's certificate (what --ca is given). */
  caPath: string;
  cert: string;
  key: string;
}

/** A CA, and a server certificate it signed for localhost, 127.0.0.1 and ::1 (openssl, 2048-bit RSA, 2 days). */
export function makePki(): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'wakestorm-pki-'));
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  ssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-days',
    '2',
    '-subj',
    '/CN=wakestorm test CA',
  );
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n');
  ssl(
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    'san.ext',
    '-out',
    'server.pem',
  );
  return {
    dir,
    caPath: join(dir, 'ca.pem'),
    cert: readFileSync(join(dir, 'server.pem'), 'utf8'),
    key: readFileSync(join(dir, 'server.key'), 'utf8'),
  };
}

export interface TlsFront {
  port: number;
  close(): Promise<void>;
}

/** A TLS listener on 127.0.0.1 and ::1 (one port) that pipes every connection to 127.0.0.1:`to`. */
export async function startTlsFront(pki: Pki, to: number): Promise<TlsFront> {
  const servers: Server[] = [];
  const listen = (host: string, port: number) =>
    new Promise<number>((res, rej) => {
      const s = createServer({ cert: pki.cert, key: pki.key }, (client) => {
        const upstream = connect({ host: '127.0.0.1', port: to });
        client.pipe(upstream).pipe(client);
        const end = () => {
          client.destroy();
          upstream.destroy();
        };
        client.on('error', end).on('close', end);
        upstream.on('error', end).on('close', end);
      });
      s.once('error', rej);
      s.listen(port, host, () => res((s.address() as AddressInfo).port));
      servers.push(s);
    });
  const port = await listen('127.0.0.1', 0);
  await listen('::1', port);
  return {
    port,
    close: () => Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r())))).then(() => {}),
  };
}
