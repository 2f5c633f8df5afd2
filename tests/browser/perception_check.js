// Headless Chromium (Debian's, never a downloaded one) against the bot's local page with the
// "send my camera" (and optionally "share my screen") boxes ticked: a fake camera playing a
// Y4M file of a real photograph (CAMERA_Y4M), a fake microphone (MIC_WAV, silence), and
// Chrome's fake screen picker choosing the entire screen. Stays STAY_SECS connected, then
// writes a JSON result for tests/test_perception_browser.py; exits non-zero only on a crash.
//   BOT_URL=http://localhost:7860/ CAMERA_Y4M=/abs/cam.y4m MIC_WAV=/abs/silence.wav \
//   SHARE_SCREEN=1 STAY_SECS=15 SCREENSHOT=/abs/p.png RESULT=/abs/r.json \
//   node tests/browser/perception_check.js
"use strict";
const fs = require("fs");
const { chromium } = require("playwright-core");
const { env, recordExternalRequests } = require("./browser");

const BOT_URL = env("BOT_URL", "http://localhost:7860/");
const SCREENSHOT = env("SCREENSHOT", "perception-page.png");
const SHARE_SCREEN = env("SHARE_SCREEN", "0") === "1";
const result = { steps: [], external_requests: [], page_errors: [], console_errors: [] };
const done = (step) => result.steps.push(step);

// browser.js's launch flags (launchWithFakeMic), plus the fake camera's file and the screen
// picker that selects the entire screen without asking.
function launch() {
  const args = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--auto-select-desktop-capture-source=Entire screen",
  ];
  if (env("MIC_WAV", "")) args.push(`--use-file-for-fake-audio-capture=${env("MIC_WAV", "")}`);
  if (env("CAMERA_Y4M", "")) args.push(`--use-file-for-fake-video-capture=${env("CAMERA_Y4M", "")}`);
  return chromium.launch({ executablePath: env("CHROMIUM", "/usr/bin/chromium"), headless: true, args });
}

// What the page sends and receives on each transceiver, from its own peer connection.
const transceivers = (page) => page.evaluate(async () => {
  if (!pc) return [];
  const stats = await pc.getStats();
  const outbound = {};
  stats.forEach((r) => {
    if (r.type === "outbound-rtp") outbound[r.mid] = { frames: r.framesEncoded, bytes: r.bytesSent, kind: r.kind };
  });
  return pc.getTransceivers().map((t, index) => ({
    index, mid: t.mid, direction: t.direction, current: t.currentDirection,
    kind: t.receiver.track.kind, sending: t.sender.track ? t.sender.track.label : null,
    sent: outbound[t.mid] || null,
  }));
});

(async () => {
  const browser = await launch();
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  recordExternalRequests(page, result.external_requests);
  page.on("pageerror", (err) => result.page_errors.push(String(err && err.message ? err.message : err)));
  page.on("console", (msg) => { if (msg.type() === "error") result.console_errors.push(msg.text()); });
  try {
    await page.goto(BOT_URL);
    await page.waitForFunction(() => document.querySelector("#persona-name").textContent !== "the persona",
      null, { timeout: 10000 }).catch(() => {});
    result.persona_name = await page.$eval("#persona-name", (e) => e.textContent);
    result.display_media_supported = await page.evaluate(() => !!navigator.mediaDevices.getDisplayMedia);
    await page.check("#camera");
    if (SHARE_SCREEN) await page.check("#share-screen");
    await page.getByRole("button", { name: "Connect", exact: true }).click();
    await page.waitForFunction(() => document.body.dataset.status === "connected", null, { timeout: 30000 });
    done("connected");
    result.sent_video = await page.evaluate(() => window.sentVideo);
    result.screen_note = await page.$eval("#screen-note", (e) => (e.hidden ? "" : e.textContent));
    const stayMs = Number(env("STAY_SECS", "15")) * 1000;
    await page.waitForTimeout(stayMs / 2);
    result.transceivers_midway = await transceivers(page);
    await page.waitForTimeout(stayMs / 2);
    result.transceivers = await transceivers(page);
    done("stayed");
    if (SHARE_SCREEN && result.sent_video && result.sent_video.screen) {
      // The user stops sharing (Chrome's "Stop sharing" ends the track the same way).
      await page.evaluate(() => {
        const track = pc.getTransceivers()[2].sender.track;
        track.stop();
        track.dispatchEvent(new Event("ended"));
      });
      result.screen_note_after_stop = await page.$eval("#screen-note", (e) => (e.hidden ? "" : e.textContent));
      done("screen stopped");
    }
    result.log = await page.$eval("#log", (e) => e.textContent);
    result.status = await page.evaluate(() => document.body.dataset.status);
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    await page.click("#disconnect");
    await page.waitForFunction(() => document.body.dataset.status === "disconnected", null, { timeout: 10000 });
    done("disconnected");
  } catch (err) {
    result.error = String(err && err.message ? err.message : err);
    try { await page.screenshot({ path: SCREENSHOT, fullPage: true }); } catch {}
    result.log = await page.$eval("#log", (e) => e.textContent).catch(() => "");
  }
  fs.writeFileSync(env("RESULT", "perception-result.json"), JSON.stringify(result, null, 2));
  await browser.close();
})();
