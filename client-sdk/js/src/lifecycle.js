// The app's lifecycle, from whatever the platform offers, turned into five
// calls on the client: foreground, background, online, offline and
// networkChanged (a switch between networks without going offline).
//
// Browsers (and Capacitor, Cordova, Electron: web views): `online` and
// `offline` on the window, `visibilitychange` on the document, and the Page
// Lifecycle API's `freeze` and `resume` (Chromium, on the document). React
// Native has none of these: the app passes its `AppState` module and the
// `@react-native-community/netinfo` module, whose events are mapped below.
// Nothing here imports a platform module: the SDK stays dependency-free.

/**
 * Listens to the lifecycle; returns a function that stops listening.
 *
 * @param {{foreground: Function, background: Function, online: Function,
 *   offline: Function, networkChanged: Function}} on
 * @param {object} [sources]
 * @param {EventTarget} [sources.target] where `online`/`offline` fire (default: globalThis)
 * @param {{visibilityState: string, addEventListener: Function}} [sources.document]
 *   where `visibilitychange`, `freeze` and `resume` fire (default: globalThis.document)
 * @param {{addEventListener: Function}} [sources.appState] React Native's `AppState`
 * @param {{addEventListener: Function}} [sources.netInfo] `@react-native-community/netinfo`
 */
export function watchLifecycle(on, sources = {}) {
  const target = sources.target ?? globalThis;
  const doc = sources.document ?? globalThis.document;
  const stops = [];
  const listen = (where, name, fn) => {
    if (!where || typeof where.addEventListener !== 'function') return;
    where.addEventListener(name, fn);
    stops.push(() => where.removeEventListener(name, fn));
  };
  listen(target, 'online', () => on.online());
  listen(target, 'offline', () => on.offline());
  // A frozen page runs no timers and its socket may die meanwhile; `resume`
  // is the moment to check it.
  listen(doc ?? target, 'freeze', () => on.background());
  listen(doc ?? target, 'resume', () => on.foreground());
  if (doc) {
    listen(doc, 'visibilitychange', () => (doc.visibilityState === 'hidden' ? on.background() : on.foreground()));
  }
  if (sources.appState && typeof sources.appState.addEventListener === 'function') {
    // 'active' is the foreground; 'background' the background; iOS's
    // 'inactive' (a call, the app switcher) is neither and changes nothing.
    const subscription = sources.appState.addEventListener('change', (state) => {
      if (state === 'active') on.foreground();
      else if (state === 'background') on.background();
    });
    stops.push(() => subscription?.remove?.());
  }
  if (sources.netInfo && typeof sources.netInfo.addEventListener === 'function') {
    let last = null;
    const unsubscribe = sources.netInfo.addEventListener((state) => {
      // `isInternetReachable` is null while unknown: only false counts.
      const up = state?.isConnected !== false && state?.isInternetReachable !== false;
      const kind = state?.type ?? null;
      const previous = last;
      last = { up, kind };
      if (previous === null) {
        if (!up) on.offline();
        return;
      }
      if (up && !previous.up) on.online();
      else if (!up && previous.up) on.offline();
      else if (up && kind !== previous.kind) on.networkChanged();
    });
    stops.push(() => (typeof unsubscribe === 'function' ? unsubscribe() : unsubscribe?.remove?.()));
  }
  return () => {
    for (const stop of stops.splice(0)) stop();
  };
}
