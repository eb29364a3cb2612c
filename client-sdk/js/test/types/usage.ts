// Compiled (never run) by types.test.js with `tsc --strict --noEmit`: the
// declarations in tribune.d.ts must describe how the SDK is used.
import {
  TribuneClient,
  TribuneError,
  decodeServerFrame,
  encodeClientFrame,
  validateTopic,
  sharedClient,
  type MessageEvent,
  type SubscriptionEvent,
} from '../../src/tribune.js';

interface Board {
  kind: 'results';
  rows: { name: string; rank: number | null }[];
}

export async function usage(): Promise<number> {
  const client = new TribuneClient({ url: 'wss://hub.example.org/v1/ws', backoff: { initialMs: 100 } });
  const off = client.on('state', (s) => {
    const state: 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed' = s.state;
    void state;
  });
  off();
  client.on('error', (e: TribuneError) => void e.code);
  const sub = client.subscribe<Board>('results.a.b', { history: 1, onStats: (s) => void s.audience });
  const delayed = client.subscribe('clips.a.b', { delayMs: 30000, onRetract: (r) => void r.seq });
  delayed.setDelay(delayed.delayMs + 15000);
  let total = 0;
  for await (const ev of sub) {
    const e: SubscriptionEvent<Board> = ev;
    if (e.type === 'message') total += e.data.rows.length;
    else if (e.type === 'gap') total += e.reason === 'lost' ? (e.before ?? 0) - (e.after ?? 0) : (e.after ?? 0);
    else if (e.type === 'retract') total += e.at - e.seq;
    else total += e.reactions['🔥'] ?? 0;
  }
  for await (const m of sub.messages()) {
    const msg: MessageEvent<Board> = m;
    total += msg.seq;
  }
  await sub.react('🔥');
  await client.react('results.a.b', '👏');
  const rtt: number = await client.ping();
  const frame = decodeServerFrame('{"type":"pong","id":1}');
  if (frame.type === 'message') total += frame.prev;
  else if (frame.type === 'gap') total += frame.before - frame.after;
  const text: string = encodeClientFrame({ type: 'subscribe', id: 1n, topic: 'clips.a', since: 3, epoch: 'E' });
  const reason: string | null = validateTopic('clips.a');
  sharedClient('wss://x/v1/ws').close();
  const page = await client.history<Board>('results.a.b', { limit: 20 });
  for (const m of page.messages) total += m.data.rows.length;
  for (const g of page.gaps) total += (g.before ?? 0) - (g.after ?? 0);
  if (page.before !== null) {
    const older = await client.history<Board>('results.a.b', { before: page.before });
    total += older.messages.length + older.epoch.length;
  }
  return total + rtt + text.length + (reason ? 1 : 0);
}
