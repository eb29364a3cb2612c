// Tribune JavaScript SDK, the public entry: one websocket connection to a hub,
// any number of subscriptions on it, transparent resume across reconnects.
// This file only gathers the API (tribune.d.ts describes it); the code lives in:
// - protocol.js: wire rules, frame decoding and encoding, close codes.
// - client.js: TribuneClient (the connection, its states, reconnects,
//   requests, the continuity rules of PROTOCOL.md section 5), sharedClient.
// - subscription.js: Subscription, the caller's handle (async iterable and
//   callbacks).
// - topic-state.js: TopicState, what the client knows of one topic.
// - emitter.js: the listener list behind every `on`/`off`.
// - history.js: GET /v1/history, one page of a topic's retained messages.
// - lifecycle.js: the app's lifecycle (browsers' events, React Native's
//   AppState and NetInfo) as calls on the client.
// Imports only go down that list (client → subscription, topic-state,
// emitter, history, lifecycle, protocol), never back up.
//
// No runtime dependency: it runs in browsers and in Node >= 20 (pass the `ws`
// package's WebSocket as the `WebSocket` option where there is no global one).

export * from './protocol.js';
export { ConnectionState, TribuneClient, sharedClient } from './client.js';
export { Subscription } from './subscription.js';
export { MAX_HISTORY_LIMIT, fetchHistory, historyUrl } from './history.js';
export { watchLifecycle } from './lifecycle.js';
