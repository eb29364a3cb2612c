// The JS SDK's mobile lifecycle against the real hub binary (embedded bus)
// through a loopback proxy: offline→online resumes at once (no backoff), a
// return to the foreground checks a silently dead socket and replaces it,
// and a backgrounded client closes after its delay and resumes without loss
// on visibilitychange. The lifecycle events come from an EventTarget and a
// document stand-in passed as `lifecycle` sources (Node has neither window
// nor document); the client reacts to them exactly as to a browser's.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { TribuneClient, watchLifecycle } from '../src/tribune.js';
import { Hub, startProxy } from './support/hub.js';
import { eventually } from './support/util.js';

let hub;
let unique = 0;
const topicFor = (ns) => `${ns}.life${process.pid}.t${++unique}`;

before(async () => {
  hub = await Hub.start([]);
});

after(async () => {
  await hub?.stop();
});

/** A page stand-in: `window` for online/offline, `document` for visibility. */
function page() {
  const target = new EventTarget();
  const document = new EventTarget();
  document.visibilityState = 'visible';
  return {
    target,
    document,
    offline: () => target.dispatchEvent(new Event('offline')),
    online: () => target.dispatchEvent(new Event('online')),
    hide() {
      document.visibilityState = 'hidden';
      document.dispatchEvent(new Event('visibilitychange'));
    },
    show() {
      document.visibilityState = 'visible';
      document.dispatchEvent(new Event('visibilitychange'));
    },
  };
}

/**
 * A client whose own mechanisms are slow on purpose (backoff from 5 s,
 * heartbeats of 25 s): what is fast below is the lifecycle's doing.
 */
async function setup(t, options = {}) {
  const proxy = await startProxy(hub.port);
  const p = page();
  const c = new TribuneClient({
    url: proxy.wsUrl,
    WebSocket,
    backoff: { initialMs: 5000, maxMs: 30000 },
    lifecycle: { target: p.target, document: p.document },
    ...options,
  });
  const states = [];
  c.on('state', (s) => states.push(s));
  t.after(async () => {
    c.close();
    await proxy.close();
  });
  return { c, p, proxy, states };
}

/** Subscribes; resolves with the messages array once the hub acked. */
async function follow(c, topic) {
  const messages = [];
  await new Promise((resolve) => {
    c.subscribe(topic, { onMessage: (m) => messages.push(m), onSubscribed: resolve });
  });
  return messages;
}

test('offline then online resumes in under a second, without backoff or loss', async (t) => {
  const { c, p, proxy, states } = await setup(t);
  const topic = topicFor('clips');
  const messages = await follow(c, topic);
  const first = await hub.publish(topic, { n: 1 });
  await eventually(() => messages.length === 1, { message: 'first message' });

  p.offline();
  assert.equal(c.state, 'reconnecting');
  await eventually(() => proxy.connections === 0, { message: 'the socket closed when offline' });
  const missed = await hub.publish(topic, { n: 2 });
  // Offline: no attempt burns the backoff.
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(proxy.connections, 0, 'no attempt while offline');

  const started = Date.now();
  p.online();
  await eventually(() => messages.length === 2, { message: 'the missed message', timeoutMs: 5000 });
  const took = Date.now() - started;
  t.diagnostic(`online → the missed message after ${took} ms`);
  assert.ok(took < 1000, `resumed in ${took} ms`);
  assert.deepEqual(
    messages.map((m) => m.seq),
    [first, missed],
    'nothing lost, nothing twice',
  );
  assert.deepEqual(messages[1].data, { n: 2 });
  const waits = states.filter((s) => s.state === 'reconnecting' && s.delayMs > 0);
  assert.deepEqual(waits, [], 'no backoff delay on the way back');
});

test('back in the foreground, a silently dead socket is found and replaced at once', async (t) => {
  const { c, p, proxy } = await setup(t, { probeTimeoutMs: 400 });
  const topic = topicFor('clips');
  const messages = await follow(c, topic);
  await hub.publish(topic, { n: 1 });
  await eventually(() => messages.length === 1, { message: 'first message' });

  // A live socket passes the check: nothing changes.
  const welcome = c.welcome;
  p.hide();
  p.show();
  await new Promise((r) => setTimeout(r, 700));
  assert.equal(c.state, 'connected');
  assert.equal(c.welcome, welcome, 'same connection');

  // The network under the socket changed: it is dead and says nothing.
  proxy.silence();
  const missed = await hub.publish(topic, { n: 2 });
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(messages.length, 1, 'the dead socket delivers nothing');
  const started = Date.now();
  p.show();
  await eventually(() => messages.length === 2, { message: 'the missed message', timeoutMs: 5000 });
  const took = Date.now() - started;
  assert.equal(messages[1].seq, missed);
  t.diagnostic(`foreground on a dead socket → the missed message after ${took} ms (probe 400 ms)`);
  assert.ok(took < 1000, `replaced and resumed in ${took} ms (check: 400 ms)`);
  assert.notEqual(c.welcome, welcome, 'a new connection');
});

test('a backgrounded client closes after the delay and resumes without loss on return', async (t) => {
  const { c, p, proxy, states } = await setup(t, { backgroundCloseAfterMs: 300 });
  const topic = topicFor('clips');
  const messages = await follow(c, topic);
  const first = await hub.publish(topic, { n: 1 });
  await eventually(() => messages.length === 1, { message: 'first message' });

  const hidden = Date.now();
  p.hide();
  await eventually(() => proxy.connections === 0, { message: 'closed in the background', timeoutMs: 5000 });
  const closedAfter = Date.now() - hidden;
  assert.ok(closedAfter >= 290, `closed after ${closedAfter} ms, not before the delay`);
  assert.ok(states.some((s) => s.state === 'reconnecting' && s.suspended));
  const missed = [];
  for (let n = 2; n < 5; n++) missed.push(await hub.publish(topic, { n }));
  // Paused: no attempt while in the background.
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(proxy.connections, 0, 'no connection while in the background');
  assert.equal(messages.length, 1);

  const started = Date.now();
  p.show();
  await eventually(() => messages.length === 4, { message: 'the messages missed', timeoutMs: 5000 });
  const took = Date.now() - started;
  t.diagnostic(`visible after a background close → the missed messages after ${took} ms`);
  assert.ok(took < 1000, `resumed in ${took} ms`);
  assert.deepEqual(
    messages.map((m) => m.seq),
    [first, ...missed],
    'exactly the missed messages, in order, once',
  );
  // A short trip to the background (shorter than the delay) keeps the socket.
  const welcome = c.welcome;
  p.hide();
  await new Promise((r) => setTimeout(r, 100));
  p.show();
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(c.welcome, welcome, 'the same connection');
  assert.equal(c.state, 'connected');
});

test('React Native adapters: AppState and NetInfo events map to the lifecycle', () => {
  const calls = [];
  const on = {
    foreground: () => calls.push('foreground'),
    background: () => calls.push('background'),
    online: () => calls.push('online'),
    offline: () => calls.push('offline'),
    networkChanged: () => calls.push('networkChanged'),
  };
  let appListener = null;
  let removed = 0;
  const appState = {
    addEventListener(type, fn) {
      assert.equal(type, 'change');
      appListener = fn;
      return { remove: () => removed++ };
    },
  };
  let netListener = null;
  const netInfo = {
    addEventListener(fn) {
      netListener = fn;
      return () => removed++;
    },
  };
  // No window or document in React Native: an empty target stands for none.
  const stop = watchLifecycle(on, { target: {}, document: undefined, appState, netInfo });
  netListener({ isConnected: true, isInternetReachable: true, type: 'wifi' }); // the initial state
  appListener('background');
  appListener('inactive'); // iOS: a call, the app switcher: nothing
  appListener('active');
  netListener({ isConnected: true, isInternetReachable: null, type: 'cellular' });
  netListener({ isConnected: false, isInternetReachable: false, type: 'none' });
  netListener({ isConnected: true, isInternetReachable: true, type: 'wifi' });
  assert.deepEqual(calls, ['background', 'foreground', 'networkChanged', 'offline', 'online']);
  stop();
  assert.equal(removed, 2, 'both listeners removed');
});
