// Compiled (never run) by package.test.js inside a project that installed the
// packed tarball: both entry points resolve through the package's `exports`
// to their declarations, as a consumer's TypeScript sees them.
import { TribuneClient, type MessageEvent, type StatsEvent } from '@tribune/client';
import { TribuneClips, TribuneResults, resolveWsUrl, safeUrl, type TribuneStateDetail } from '@tribune/client/widget';

interface Board {
  kind: 'results';
  rows: { name: string }[];
}

export function usage(): number {
  const client = new TribuneClient({ hub: 'https://hub.example.org' });
  client.subscribe<Board>('results.a.b', { onMessage: (m: MessageEvent<Board>) => void m.data.rows.length });

  const results: TribuneResults = document.createElement('tribune-results');
  results.setAttribute('topic', 'results.a.b');
  results.addEventListener('tribune-stats', (e) => {
    const stats: StatsEvent = e.detail;
    void stats.audience;
  });
  results.addEventListener('tribune-state', (e) => {
    const detail: TribuneStateDetail = e.detail;
    void detail.state;
  });
  const clips: TribuneClips = document.createElement('tribune-clips');
  clips.addEventListener('tribune-gap', (e) => void e.detail.reason);
  clips.addEventListener('tribune-message', (e) => void e.detail.seq);
  clips.addEventListener('click', (e: MouseEvent) => void e.button);
  const url: string = resolveWsUrl(clips);
  const link: string | null = safeUrl('https://media.example.org/a.jpg');
  return clips.max + url.length + (link ? 1 : 0) + (clips.subscription ? 1 : 0);
}
