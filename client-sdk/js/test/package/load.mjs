// Run by package.test.js with node inside a project that installed the packed
// tarball: imports both entry points by the package's name, as a consumer
// does, and prints what they export. Node has no DOM: two globals, just
// enough for the widget's modules to evaluate and register their elements
// (the elements themselves run in Chromium, in the widget tests).

const registry = new Map();
globalThis.HTMLElement = class HTMLElement {};
globalThis.customElements = {
  get: (name) => registry.get(name),
  define: (name, ctor) => registry.set(name, ctor),
};

const sdk = await import('@tribune/client');
const widget = await import('@tribune/client/widget');
console.log(
  JSON.stringify({
    sdk: Object.keys(sdk).sort(),
    widget: Object.keys(widget).sort(),
    sdkUrl: import.meta.resolve('@tribune/client'),
    widgetUrl: import.meta.resolve('@tribune/client/widget'),
    elements: {
      'tribune-results': registry.get('tribune-results') === widget.TribuneResults,
      'tribune-clips': registry.get('tribune-clips') === widget.TribuneClips,
    },
  }),
);
