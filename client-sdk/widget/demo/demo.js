// Fills the embed snippet of the demo page with this hub's own address, so
// that it can be copied as is. Text only: the snippet is set with textContent.

const snippet = document.getElementById('snippet');
if (snippet) {
  const origin = window.location.origin;
  snippet.textContent = [
    `<script type="module" src="${origin}/widget/tribune-widget.js"></script>`,
    '<tribune-results topic="results.demo2026.speed-skating.mixed-team-sprint"></tribune-results>',
    '<tribune-clips topic="clips.demo2026.speed-skating"></tribune-clips>',
  ].join('\n');
}
