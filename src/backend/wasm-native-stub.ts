/**
 * Browser stand-in for native.ts (package.json "browser" field maps dist/backend/native.js here):
 * the N-API addon cannot exist in a page, and native.ts imports node:fs / node:module, which a
 * browser bundle cannot resolve. getBackend() then falls back as it does when the addon is not
 * built; the browser entry (src/browser.ts) installs the wasm or WebGPU backend instead.
 */

/** Always null in a browser: there is no native addon. */
export function loadNativeBackend(): null {
  return null;
}

/** Why the native backend is unavailable here. */
export function nativeLoadError(): string {
  return 'the native addon does not run in a browser (use the wasm or WebGPU backend: selectBrowserBackend())';
}

/** The addon has no path in a browser. */
export function nativeAddonPath(): string {
  throw new Error(nativeLoadError());
}
