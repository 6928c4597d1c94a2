// `wakestorm server`: runs the reference server in the foreground until SIGTERM/SIGINT, then drains and exits 0.
import cluster from 'node:cluster';
import { isLoopbackHost } from '../core/run-config.ts';
import { runPrimary, workerLink, workerListening } from './cluster.ts';
import { defaultConfig, type ServerConfig } from './config.ts';
import { startVoiceServer, type VoiceServer } from './server.ts';

export async function runServerCommand(cfg: Partial<ServerConfig>): Promise<void> {
  const workers = cfg.workers ?? defaultConfig.workers;
  if (workers > 1 && cluster.isPrimary) {
    // The primary holds no device: it forks the workers and keeps the protocol true across them (server/cluster.ts).
    const balance = cfg.balance ?? defaultConfig.balance;
    const url = await runPrimary(workers, balance, (l) => console.log(l));
    console.log(
      `wakestorm server listening on ${url} with ${workers} workers, balance ${balance} (ws: /ws and /ws/{deviceId}; http: /health, /metrics)`,
    );
    return;
  }
  if (cluster.isWorker) {
    // The primary handles signals (a terminal's Ctrl-C reaches every process of the group) and says when to drain.
    process.on('SIGINT', () => {});
    process.on('SIGTERM', () => {});
    process.on('disconnect', () => process.exit(1));
    let server: VoiceServer | null = null;
    server = await startVoiceServer(
      cfg,
      workerLink(() => server?.worker ?? null),
    );
    workerListening(server.wsUrl);
    return;
  }
  const server = await startVoiceServer(cfg);
  const c = server.config;
  console.log(
    `wakestorm server listening on ${server.wsUrl} (ws: /ws and /ws/{deviceId}; http: /health, /metrics) ` +
      `keepalive=${c.keepaliveMs}ms stt=${c.sttMs}ms llm=${c.llmMs}ms tts=${c.ttsMs}ms pace=${c.ttsPace} auth=${c.tokens.length ? 'on' : 'off'}`,
  );
  if (!c.tokens.length && !isLoopbackHost(c.host)) {
    process.stderr.write(
      `wakestorm server: warning: listening on ${c.host} without a token: any host that reaches it can connect devices (give --token or --tokens-file)\n`,
    );
  }
  let draining = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (draining) {
      // A second signal while draining: every socket gets 1001 now, and the process exits.
      console.log(`wakestorm server: ${sig} again, closing every connection now (1001)`);
      void server.forceClose().then(() => process.exit(0));
      return;
    }
    draining = true;
    console.log(`wakestorm server: ${sig}, draining (up to ${c.drainMs} ms for active replies)`);
    void server.drain().then(() => {
      console.log('wakestorm server: drained, bye');
      process.exit(0);
    });
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
