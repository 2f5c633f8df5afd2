// One page session for measurement: headless Chromium (Debian's) opens the local page with a
// fake microphone WAV, connects, stays for LISTEN_SECS after the microphone opened, then writes
// every data-channel message with its arrival time (ms since the microphone opened) and the
// microphone's effective settings to RESULT. Used by benchmarks/page_wer.py.
//   BOT_URL='http://localhost:7860/?ec=0' MIC_WAV=/abs/conv.wav LISTEN_SECS=120 RESULT=/abs/r.json \
//   node tests/browser/listen_session.js
"use strict";
const fs = require("fs");
const { env, launchWithFakeMic, recordExternalRequests } = require("./browser");

const result = { external_requests: [] };

(async () => {
  const browser = await launchWithFakeMic();
  const page = await browser.newPage();
  recordExternalRequests(page, result.external_requests);
  try {
    await page.goto(env("BOT_URL", "http://localhost:7860/"));
    await page.getByRole("button", { name: "Connect", exact: true }).click();
    await page.waitForFunction(() => document.body.dataset.status === "connected", null, { timeout: 30000 });
    const listenMs = Number(env("LISTEN_SECS", "60")) * 1000;
    await page.waitForTimeout(1000);
    for (;;) {
      const elapsed = await page.evaluate(() => performance.now() - window.micOpenedAtMs);
      if (elapsed >= listenMs) break;
      await page.waitForTimeout(Math.min(5000, listenMs - elapsed));
    }
    result.mic_settings = await page.evaluate(() => window.micSettings);
    if (env("SCREENSHOT", "")) await page.screenshot({ path: env("SCREENSHOT", ""), fullPage: true });
  } catch (err) {
    result.error = String(err && err.message ? err.message : err);
  }
  result.events = await page.evaluate(() => window.eventLog || []).catch(() => []);
  fs.writeFileSync(env("RESULT", "result.json"), JSON.stringify(result));
  await browser.close();
})();
