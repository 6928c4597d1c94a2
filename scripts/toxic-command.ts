// `wakestorm toxic`: apply a fault by hand to a running stack (list, add, remove, cut, reset), through the one
// Toxiproxy path (core/toxiproxy-api.ts, carried out by scripts/toxiproxy.ts).
import { FAULTS, LINK_ACTIONS, TOXICS, resolveParams, resolveStreams } from '../core/faults.ts';
import { toMs } from '../core/timelines.ts';
import { ToxiproxyClient } from './toxiproxy.ts';
import { urlList } from '../core/run-config.ts';
import { WakestormError } from '../core/errors.ts';

/** Bad input to `wakestorm toxic`: one line, exit 2, like every other command. */
class ToxicError extends WakestormError {
  constructor(message: string) {
    super(message, 2);
  }

  override name = 'ToxicError';
}

export interface ToxicOpts {
  /** One Toxiproxy API, or a comma-separated list (the shards `wakestorm stack` prints): each command acts on all. */
  toxiproxyUrl: string;
  proxy: string;
}

/** The shards named by --toxiproxy-url, each as its own options. */
function shards(o: ToxicOpts): ToxicOpts[] {
  return urlList(o.toxiproxyUrl, '--toxiproxy-url', ToxicError).map((toxiproxyUrl) => ({ ...o, toxiproxyUrl }));
}

/** " (on http://…)" when several shards are acted on, so each line says where. */
function on(o: ToxicOpts, all: ToxicOpts[]): string {
  return all.length > 1 ? ` (on ${o.toxiproxyUrl})` : '';
}

export async function toxicList(opts: ToxicOpts): Promise<void> {
  const all = shards(opts);
  for (const o of all) {
    if (all.length > 1) console.log(`# ${o.toxiproxyUrl}`);
    const tp = new ToxiproxyClient(o.toxiproxyUrl);
    for (const [name, p] of Object.entries(await tp.proxies())) {
      console.log(`${name}  ${p.listen} -> ${p.upstream}  ${p.enabled ? 'enabled' : 'DISABLED'}`);
      const toxics = await tp.toxics(name);
      for (const t of toxics)
        console.log(`  ${t.name}  ${t.type} ${t.stream} toxicity=${t.toxicity} ${JSON.stringify(t.attributes)}`);
      if (!toxics.length) console.log('  (no toxics)');
    }
  }
}

/** Parses "latency=200 jitter=50" into numbers. */
export function parseParamArgs(args: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const a of args) {
    const m = /^([a-z_]+)=(-?\d+(?:\.\d+)?)$/.exec(a);
    if (!m) throw new ToxicError(`param '${a}' must look like name=number, e.g. latency=200`);
    out[m[1]!] = Number(m[2]);
  }
  return out;
}

export async function toxicAdd(
  opts: ToxicOpts,
  fault: string,
  paramArgs: string[],
  stream: string | undefined,
  toxicity: number,
): Promise<void> {
  const where = `toxic add ${fault}`;
  const params = resolveParams(fault, parseParamArgs(paramArgs), where);
  const def = FAULTS[fault]!;
  if (!(fault in TOXICS))
    throw new ToxicError(
      `${fault} is not a toxic but a link action (${Object.keys(LINK_ACTIONS).join(', ')}): use 'wakestorm toxic cut --for 10s' or a timeline entry`,
    );
  const streams = resolveStreams(fault, stream, where);
  const all = shards(opts);
  for (const o of all) {
    const tp = new ToxiproxyClient(o.toxiproxyUrl);
    for (const a of def.actions(params, streams, toxicity)) {
      if (a.kind !== 'toxic') continue;
      const name = `manual-${fault}-${a.stream}`;
      await tp.addToxic(o.proxy, {
        name,
        type: a.type,
        stream: a.stream,
        toxicity: a.toxicity,
        attributes: a.attributes,
      });
      console.log(`added ${name} on ${o.proxy}${on(o, all)}: ${a.type} ${a.stream} ${JSON.stringify(a.attributes)}`);
    }
  }
}

export async function toxicRemove(opts: ToxicOpts, name: string | undefined): Promise<void> {
  const all = shards(opts);
  for (const o of all) {
    const tp = new ToxiproxyClient(o.toxiproxyUrl);
    const names = name ? [name] : (await tp.toxics(o.proxy)).map((t) => t.name);
    for (const n of names) {
      await tp.removeToxic(o.proxy, n);
      console.log(`removed ${n} from ${o.proxy}${on(o, all)}`);
    }
    if (!names.length) console.log(`no toxics on ${o.proxy}${on(o, all)}`);
  }
}

/** Disables the proxy for a while (a network outage as devices see it); Ctrl-C ends it early, never leaves it down. */
export async function toxicCut(opts: ToxicOpts, forSpec: string): Promise<void> {
  const ms = toMs(forSpec, 'toxic cut', '--for');
  // Every shard goes down together and comes back together: one outage, as the fleet sees it.
  const proxies = shards(opts).map((sh) => new ToxiproxyClient(sh.toxiproxyUrl));
  // The proxy must exist on every shard before anything goes down.
  for (const tp of proxies)
    if (!((await tp.proxies()) as Record<string, unknown>)[opts.proxy])
      throw new Error(`no proxy "${opts.proxy}" at ${tp.url}`);
  const set = (enabled: boolean) => Promise.all(proxies.map((tp) => tp.setEnabled(opts.proxy, enabled)));
  await set(false);
  console.log(
    `cut ${opts.proxy}${proxies.length > 1 ? ` on ${proxies.length} shards` : ''} for ${ms} ms (Ctrl-C restores it now)`,
  );
  await new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    const early = () => {
      clearTimeout(t);
      resolve();
    };
    process.once('SIGINT', early);
    process.once('SIGTERM', early);
  });
  await set(true);
  console.log(`${opts.proxy} restored`);
}

export async function toxicReset(opts: ToxicOpts): Promise<void> {
  const all = shards(opts);
  for (const o of all) await new ToxiproxyClient(o.toxiproxyUrl).reset();
  console.log(`every toxic removed, every proxy enabled${all.length > 1 ? ` on ${all.length} shards` : ''}`);
}
