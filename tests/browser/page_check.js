// Headless Chromium (Debian's, never a downloaded one) against the bot's local page, with a
// fake microphone WAV. Writes a JSON result for tests/test_browser.py; exits non-zero only
// on a crash (the Python test asserts on the result).
//   BOT_URL=http://localhost:7860/ MIC_WAV=/abs/q.wav SCREENSHOT=/abs/p.png RESULT=/abs/r.json \
//   node tests/browser/page_check.js
"use strict";
const fs = require("fs");
const { chromium } = require("playwright-core");

const env = (name, fallback) => process.env[name] || fallback;
const BOT_URL = env("BOT_URL", "http://localhost:7860/");
const result = { steps: [], external_requests: [] };
const done = (step) => result.steps.push(step);

(async () => {
  const browser = await chromium.launch({
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
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on("request", (request) => {
    const host = new URL(request.url()).hostname;
    if (!["localhost", "127.0.0.1", "[::1]"].includes(host)) result.external_requests.push(request.url());
  });
  const turns = (role) => page.evaluate((r) =>
    [...document.querySelectorAll(`.turn.${r} .text`)].map((e) => e.textContent), role);
  try {
    const t0 = Date.now();
    await page.goto(BOT_URL);
    await page.getByRole("button", { name: "Connect", exact: true }).click();
    await page.waitForFunction(() => document.body.dataset.status === "connected", null, { timeout: 30000 });
    result.connected_secs = (Date.now() - t0) / 1000;
    done("connected");
    await page.waitForFunction(() => [...document.querySelectorAll(".turn.user .text")]
      .some((e) => /capital/i.test(e.textContent)), null, { timeout: 90000 });
    done("user transcript");
    await page.waitForFunction(() => {
      const all = [...document.querySelectorAll(".turn")];
      const i = all.findIndex((e) => e.classList.contains("user") && /capital/i.test(e.textContent));
      return all.slice(i + 1).some((e) => e.classList.contains("replica") && e.querySelector(".text").textContent.trim());
    }, null, { timeout: 60000 });
    done("reply");
    await page.waitForFunction(() => document.querySelector("#latency").dataset.seconds, null, { timeout: 60000 });
    result.latency_secs = Number(await page.$eval("#latency", (e) => e.dataset.seconds));
    result.latency_text = await page.$eval("#latency", (e) => e.textContent);
    done("latency");
    result.bot_audio_energy = await page.evaluate(async () => {
      let energy = 0;
      (await pc.getStats()).forEach((r) => {
        if (r.type === "inbound-rtp" && r.kind === "audio") energy = r.totalAudioEnergy || 0;
      });
      return energy;
    });
    await page.screenshot({ path: env("SCREENSHOT", "page.png"), fullPage: true });
    done("screenshot");
    const repliesBefore = (await turns("replica")).length;
    await page.selectOption("#event-type", "conversation.respond");
    await page.fill("#properties", JSON.stringify({ text: "Please say hello to me." }));
    await page.click("#send");
    await page.waitForFunction(() => [...document.querySelectorAll("#events div")].some(
      (d) => d.dataset.type === "conversation.utterance" && d.textContent.includes("Please say hello to me.")),
      null, { timeout: 30000 });
    await page.waitForFunction((n) => [...document.querySelectorAll(".turn.replica .text")]
      .filter((e) => e.textContent.trim()).length > n, repliesBefore, { timeout: 60000 });
    done("respond reply");
    result.user_turns = await turns("user");
    result.replica_turns = await turns("replica");
    result.event_types = await page.evaluate(() =>
      [...document.querySelectorAll("#events div")].map((d) => d.dataset.type).reverse());
  } catch (err) {
    result.error = String(err && err.message ? err.message : err);
    try { await page.screenshot({ path: env("SCREENSHOT", "page.png"), fullPage: true }); } catch {}
    result.user_turns = await turns("user").catch(() => []);
    result.replica_turns = await turns("replica").catch(() => []);
  }
  fs.writeFileSync(env("RESULT", "result.json"), JSON.stringify(result, null, 2));
  await browser.close();
})();
