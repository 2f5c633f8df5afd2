// What the page scripts share: Debian's Chromium (never a downloaded one) with a fake
// microphone playing MIC_WAV once, and the guard that records any request off the machine.
"use strict";
const { chromium } = require("playwright-core");

const env = (name, fallback) => process.env[name] || fallback;

function launchWithFakeMic() {
  return chromium.launch({
    executablePath: env("CHROMIUM", "/usr/bin/chromium"),
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
      `--use-file-for-fake-audio-capture=${env("MIC_WAV", "")}%noloop`,
      "--autoplay-policy=no-user-gesture-required",
    ],
  });
}

// Every request to a host other than this machine goes into `into` (the tests assert it stays empty).
function recordExternalRequests(page, into) {
  page.on("request", (request) => {
    const host = new URL(request.url()).hostname;
    if (!["localhost", "127.0.0.1", "[::1]"].includes(host)) into.push(request.url());
  });
}

// Every request that leaves `origin` goes into `into` (stricter than the above: the page may talk
// to its own server only). The page's own blob: and data: URLs (e.g. audio worklets) never leave it.
function recordOffOriginRequests(page, origin, into) {
  page.on("request", (request) => {
    const url = request.url();
    if (/^(blob|data):/.test(url)) return;
    if (new URL(url).origin !== origin) into.push(url);
  });
}

// getUserMedia without Chrome's voice processing: a page that asks for `audio: true` gets echo
// cancellation, noise suppression and gain control, which mangle a fake microphone's WAV while the
// bot's audio plays (measured). Tests feeding a WAV turn them off for every call the page makes.
function rawMicrophone(page) {
  return page.addInitScript(() => {
    const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    const raw = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
    navigator.mediaDevices.getUserMedia = (constraints = {}) => {
      if (constraints.audio) {
        constraints = { ...constraints,
          audio: { ...(typeof constraints.audio === "object" ? constraints.audio : {}), ...raw } };
      }
      return original(constraints);
    };
  });
}

module.exports = { env, launchWithFakeMic, recordExternalRequests, recordOffOriginRequests, rawMicrophone };
