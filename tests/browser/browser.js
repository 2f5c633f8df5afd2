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

module.exports = { env, launchWithFakeMic, recordExternalRequests };
