// One script tag embeds Tribune on any page:
//
//   <script type="module" src="https://HUB/widget/tribune-widget.js"></script>
//   <tribune-results topic="results.demo2026.speed-skating.mixed-team-sprint"></tribune-results>
//   <tribune-clips topic="clips.demo2026.speed-skating"></tribune-clips>
//
// The widgets find the hub from this script's own URL; `hub="https://..."` or
// `ws-url="wss://.../v1/ws"` on an element overrides it. Both components share
// one websocket per hub and page.

export { TribuneResults } from './tribune-results.js';
export { TribuneClips } from './tribune-clips.js';
export { resolveWsUrl, safeUrl } from './shared.js';
