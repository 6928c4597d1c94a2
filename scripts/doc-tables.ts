// Tables of the README that are generated from the code, so they cannot drift: the test suite compares them.
import { PROFILES, type Profile } from '../core/profiles.ts';

function behaviour(p: Profile): string {
  const k = p.keepalive;
  const answers = k.answer_server_pings ? 'answers server pings' : '';
  const ka =
    k.send === 'none' ? answers || 'none' : `${k.send} every ${k.interval_ms / 1000} s${answers ? `, ${answers}` : ''}`;
  const l = p.liveness;
  const live =
    l.detect === 'close'
      ? 'the close event'
      : l.detect === 'pong-timeout'
        ? `no pong in ${l.timeout_ms / 1000} s`
        : `silent ${l.timeout_ms / 1000} s (checked every ${l.check_ms / 1000} s)`;
  const r = p.reconnect;
  const backoff = `${r.policy} ${r.base_ms / 1000}-${r.cap_ms / 1000} s, ${r.max_attempts ? `${r.max_attempts} tries` : 'forever'}, on ${r.on} closes`;
  const eos = p.end_of_speech === 'vad' ? "the server's VAD" : 'explicit';
  return `| \`${p.name}\` | ${p.dialect ?? 'wakestorm'} | ${ka} | ${live} | ${eos} | ${backoff} | ${p.resume ? 'yes' : 'no'} |`;
}

/** The README's table of every shipped profile's behaviours. */
export function profileTable(): string {
  return [
    '| profile | dialect | keepalive | notices a dead link by | end of speech | backoff | resumes |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...Object.values(PROFILES).map(behaviour),
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(profileTable());
