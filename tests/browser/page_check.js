// Headless Chromium (Debian's, never a downloaded one) against the bot's local page, with a
// fake microphone WAV of several voices. Writes a JSON result for tests/test_browser.py; exits
// non-zero only on a crash (the Python test asserts on the result).
//   BOT_URL=http://localhost:7860/ MIC_WAV=/abs/q.wav LISTEN_SECS=70 SCREENSHOT=/abs/p.png \
//   RESULT=/abs/r.json node tests/browser/page_check.js
"use strict";
const fs = require("fs");
const { env, launchWithFakeMic, recordExternalRequests } = require("./browser");

const BOT_URL = env("BOT_URL", "http://localhost:7860/");
const SCREENSHOT = env("SCREENSHOT", "page.png");
const result = { steps: [], external_requests: [] };
const done = (step) => result.steps.push(step);
const ECHO_ID = "page-check-echo";
const ECHO_PARTS = ["This reply comes in two parts.", "Here is the second part of it."];

(async () => {
  const browser = await launchWithFakeMic();
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  recordExternalRequests(page, result.external_requests);
  const lines = () => page.evaluate(() => [...document.querySelectorAll("#conversation .turn")].map((e) => ({
    role: e.classList.contains("user") ? "user" : "replica", inference: e.dataset.inference,
    text: e.querySelector(".text").textContent, streaming: e.classList.contains("streaming"),
    interrupted: !!e.querySelector(".note") })));
  const sinceMic = () => page.evaluate(() => (window.micOpenedAtMs ? performance.now() - window.micOpenedAtMs : 0));
  const send = (eventType, properties) => page.evaluate(([type, props]) => {
    document.querySelector("#event-type").value = type;
    document.querySelector("#event-type").dispatchEvent(new Event("change"));
    document.querySelector("#properties").value = JSON.stringify(props);
    document.querySelector("#send").click();
  }, [eventType, properties]);
  // The bot is quiet: listening, and nothing spoken for 2.5 s (a reply's segments have gaps).
  const quiet = (timeout) => page.waitForFunction(() => {
    if (document.body.dataset.state !== "listening") return false;
    const log = window.eventLog.filter((e) => /replica\.(started|stopped)_speaking/.test(e.message.event_type || ""));
    const last = log[log.length - 1];
    return !last || (last.message.event_type.endsWith("stopped_speaking") &&
      performance.now() - window.micOpenedAtMs - last.t > 2500);
  }, null, { timeout });
  const stopped = (id) => page.evaluate((inf) => window.eventLog.filter((e) =>
    e.message.event_type === "conversation.replica.stopped_speaking" && e.message.inference_id === inf).length, id);
  try {
    const t0 = Date.now();
    await page.goto(BOT_URL);
    await page.waitForFunction(() => document.querySelector("#persona-name").textContent !== "the persona",
      null, { timeout: 10000 }).catch(() => {});
    result.persona_name = await page.$eval("#persona-name", (e) => e.textContent);
    result.state_before = await page.$eval("#state-text", (e) => e.textContent);
    await page.getByRole("button", { name: "Connect", exact: true }).click();
    await page.waitForFunction(() => document.body.dataset.status === "connected", null, { timeout: 30000 });
    result.connected_secs = (Date.now() - t0) / 1000;
    done("connected");
    // Let the whole microphone file play (its lines end before LISTEN_SECS).
    const listenMs = Number(env("LISTEN_SECS", "60")) * 1000;
    for (let t = await sinceMic(); t < listenMs; t = await sinceMic()) {
      await page.waitForTimeout(Math.min(3000, listenMs - t));
    }
    done("listened");
    // The last user line is answered (a persona line after it), then the bot is quiet.
    await page.waitForFunction(() => {
      const all = [...document.querySelectorAll("#conversation .turn")];
      const last = all.map((e) => e.classList.contains("user")).lastIndexOf(true);
      return last >= 0 && all.slice(last + 1).some((e) => e.classList.contains("replica") &&
        e.querySelector(".text").textContent.trim()) && document.body.dataset.state === "listening";
    }, null, { timeout: 60000 });
    done("last reply");
    await page.waitForFunction(() => document.querySelector("#latency").dataset.seconds, null, { timeout: 10000 });
    result.latency_secs = Number(await page.$eval("#latency", (e) => e.dataset.seconds));
    result.latency_text = await page.$eval("#latency", (e) => e.textContent);
    result.chart_bars = await page.$$eval("#latency-chart g.bar", (g) => g.length);
    done("latency");
    result.bot_audio_energy = await page.evaluate(async () => {
      let energy = 0;
      (await pc.getStats()).forEach((r) => {
        if (r.type === "inbound-rtp" && r.kind === "audio") energy = r.totalAudioEnergy || 0;
      });
      return energy;
    });
    result.conversation_lines = await lines();
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    done("screenshot");
    // The developer console is collapsed by default; open it to use the interactions console.
    result.console_open_before = await page.$eval("#developer", (d) => d.open);
    await page.click("#developer > summary");
    const repliesBefore = (await lines()).filter((l) => l.role === "replica" && l.text.trim()).length;
    await send("conversation.respond", { text: "Please say hello to me." });
    await page.waitForFunction(() => window.eventLog.some((e) => e.message.event_type === "conversation.utterance"
      && (e.message.properties || {}).speech === "Please say hello to me."), null, { timeout: 30000 });
    await page.waitForFunction((n) => [...document.querySelectorAll(".turn.replica .text")]
      .filter((e) => e.textContent.trim()).length > n && document.body.dataset.state === "listening",
      repliesBefore, { timeout: 60000 });
    await quiet(60000);
    done("respond reply");
    // One reply spoken in two segments (conversation.echo, same inference id, a pause between).
    await send("conversation.echo", { modality: "text", text: ECHO_PARTS[0], inference_id: ECHO_ID, done: false });
    await page.waitForFunction((id) => window.eventLog.some((e) => e.message.inference_id === id &&
      e.message.event_type === "conversation.replica.stopped_speaking"), ECHO_ID, { timeout: 30000 });
    await page.waitForTimeout(500);
    await send("conversation.echo", { modality: "text", text: ECHO_PARTS[1], inference_id: ECHO_ID, done: true });
    // (Its second part may be reported under another inference id: see the Python test.)
    await page.waitForFunction(() => [...document.querySelectorAll(".turn.replica .text")]
      .some((e) => e.textContent.includes("second part of it")), null, { timeout: 30000 });
    await quiet(30000);
    result.echo_segments = await stopped(ECHO_ID);
    done("two-part reply");
    result.lines = await lines();
    result.state_log = await page.evaluate(() => window.stateLog);
    result.mic_settings = await page.evaluate(() => window.micSettings);
    result.events = await page.evaluate(() => window.eventLog.filter((e) => e.message.event_type ||
      ["user-started-speaking", "user-stopped-speaking", "bot-started-speaking", "bot-stopped-speaking",
       "bot-llm-started", "metrics"].includes(e.message.type)));
    result.event_rows = await page.$$eval("#events div", (rows) => rows.map((d) => d.dataset.type).reverse());
    await page.screenshot({ path: SCREENSHOT.replace(/\.png$/, "-console.png"), fullPage: true });
    done("console screenshot");
  } catch (err) {
    result.error = String(err && err.message ? err.message : err);
    try { await page.screenshot({ path: SCREENSHOT, fullPage: true }); } catch {}
    result.lines = await lines().catch(() => []);
    result.state_log = await page.evaluate(() => window.stateLog).catch(() => []);
    result.events = await page.evaluate(() => window.eventLog.filter((e) => e.message.event_type)).catch(() => []);
  }
  fs.writeFileSync(env("RESULT", "result.json"), JSON.stringify(result, null, 2));
  await browser.close();
})();
