// The admin page: polls /admin/api/cluster every second for the nodes and
// topics, and tails one topic over /admin/api/tail (server-sent events).
// Every value goes into the page as text (textContent), never as HTML:
// topic names and payloads come from outside.

const POLL_MS = 1000;
const TAIL_KEEP = 200;

const $ = (id) => document.getElementById(id);

/** A table row of text cells; `num` marks the right-aligned ones. */
function row(cells, num = []) {
  const tr = document.createElement('tr');
  cells.forEach((value, i) => {
    const td = document.createElement('td');
    if (num.includes(i)) td.className = 'num';
    if (value instanceof Node) td.append(value);
    else td.textContent = String(value);
    tr.append(td);
  });
  return tr;
}

function ago(ms) {
  if (ms < 1500) return 'now';
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
}

function render(view) {
  $('self').textContent = view.node;
  $('updated').textContent = new Date().toLocaleTimeString();
  const nodes = $('nodes').tBodies[0];
  nodes.replaceChildren(
    ...view.nodes.map((n) => {
      const tr = row([n.name, n.connections, n.topics, n.silent ? `silent, ${ago(n.last_seen_ms)}` : ago(n.last_seen_ms)], [1, 2]);
      tr.dataset.node = n.name;
      if (n.silent) tr.className = 'silent';
      return tr;
    }),
  );
  const topics = $('topics').tBodies[0];
  topics.replaceChildren(
    ...view.topics.map((t) => {
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = 'tail';
      button.addEventListener('click', () => {
        $('tail-topic').value = t.topic;
        startTail(t.topic);
      });
      const tr = row([t.topic, t.audience, t.nodes, button], [1, 2]);
      tr.dataset.topic = t.topic;
      return tr;
    }),
  );
}

async function poll() {
  try {
    const res = await fetch('/admin/api/cluster', { cache: 'no-store', credentials: 'same-origin' });
    if (!res.ok) throw new Error(`cluster: HTTP ${res.status}`);
    render(await res.json());
    $('error').textContent = '';
  } catch (e) {
    $('error').textContent = String(e.message ?? e);
  }
}

let source = null;

function stopTail(state = 'stopped') {
  source?.close();
  source = null;
  $('tail-stop').disabled = true;
  $('tail-state').textContent = state;
}

/** One line of the tail for a frame the hub sent. */
function describe(frame) {
  const time = frame.ts ? new Date(frame.ts).toLocaleTimeString() : new Date().toLocaleTimeString();
  switch (frame.type) {
    case 'message':
      return `${time}  #${frame.seq}${frame.replay ? ' (replay)' : ''}  ${JSON.stringify(frame.data)}`;
    case 'stats':
      return `${time}  stats: audience ${frame.audience}, reactions ${JSON.stringify(frame.reactions)}`;
    case 'ack':
      return `${time}  subscribed to ${frame.topic}`;
    default:
      return `${time}  ${JSON.stringify(frame)}`;
  }
}

function startTail(topic) {
  stopTail();
  if (!topic) return;
  $('tail-lines').replaceChildren();
  source = new EventSource(`/admin/api/tail?topic=${encodeURIComponent(topic)}`);
  $('tail-stop').disabled = false;
  $('tail-state').textContent = `connecting to ${topic}…`;
  source.onopen = () => {
    $('tail-state').textContent = `tailing ${topic}`;
  };
  source.onerror = () => {
    $('tail-state').textContent = `${topic}: connection lost, retrying`;
  };
  source.onmessage = (event) => {
    let text;
    try {
      text = describe(JSON.parse(event.data));
    } catch {
      text = event.data;
    }
    const li = document.createElement('li');
    li.textContent = text;
    const list = $('tail-lines');
    list.prepend(li);
    while (list.children.length > TAIL_KEEP) list.lastElementChild.remove();
  };
}

$('tail-form').addEventListener('submit', (e) => {
  e.preventDefault();
  startTail($('tail-topic').value.trim());
});
$('tail-stop').addEventListener('click', () => stopTail());

poll();
setInterval(poll, POLL_MS);
