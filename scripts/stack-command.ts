// `wakestorm stack`: the stack in the foreground, with the k6 line to use, torn down on Ctrl-C or SIGTERM.
import { requireEngine, startEngine, type RunningEngine } from './engine.ts';
import { shardUrls, startStack, type StackOptions } from './stack.ts';
import { requireTools } from './tools.ts';

export async function runStackCommand(opts: StackOptions & { engine?: boolean }): Promise<void> {
  // k6 and Toxiproxy first: without them nothing runs, engine or not (the same line as setup --check).
  requireTools();
  if (opts.engine) requireEngine();
  const stack = await startStack({ ...opts, log: (l) => console.log(`  ${l}`) });
  let engine: RunningEngine | null = null;
  if (opts.engine) {
    try {
      engine = await startEngine();
    } catch (e) {
      await stack.stop();
      throw e;
    }
    console.log(`  device engine ${engine.url} (pid ${engine.pid})`);
    engine.onExit((m) => console.log(`\nwakestorm stack: ${m}`));
  }
  console.log('');
  console.log('wakestorm stack is up. Devices connect through Toxiproxy:');
  const { targetUrl: targets, toxiproxyUrl: toxiproxies } = shardUrls(stack);
  console.log(`  target     ${targets}   (server direct: ${stack.serverWsUrl})`);
  console.log(`  health     ${stack.serverHttpUrl}/health   metrics: ${stack.serverHttpUrl}/metrics`);
  console.log('');
  console.log('Run a scenario against it:');
  console.log(
    `  K6_AUTO_EXTENSION_RESOLUTION=false ${requireTools().k6} run -e TARGET_URL=${targets} -e TOXIPROXY_URL=${toxiproxies}${stack.controlUrl ? ` -e CONTROL_URL=${stack.controlUrl}` : ''} -e SERVER_URL=${stack.serverHttpUrl}${engine ? ` -e ENGINE_URL=${engine.url}` : ''} scenarios/smoke.ts`,
  );
  console.log('');
  console.log('Ctrl-C stops everything.');
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`\nwakestorm stack: ${sig}, tearing down`);
    void Promise.resolve(engine?.stop())
      .then(() => stack.stop())
      .then(() => {
        console.log('wakestorm stack: stopped; nothing left running');
        process.exit(0);
      });
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}
