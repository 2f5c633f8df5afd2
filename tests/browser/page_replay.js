// The local page without a bot: headless Chromium loads web/index.html (served from the files
// through Playwright's request routing, nothing listens), feeds it a recorded data-channel
// message sequence and reports what the page shows. For tests/test_browser.py.
//   EVENTS=/abs/events.json RESULT=/abs/r.json SCREENSHOT=/abs/p.png node tests/browser/page_replay.js
"use strict";
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const env = (name, fallback) => process.env[name] || fallback;
const WEB = path.resolve(__dirname, "..", "..", "web");
const result = {};

(async () => {
  const browser = await chromium.launch({
    executablePath: env("CHROMIUM", "/usr/bin/chromium"), headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.route("http://page.test/**", (route) => {
    const url = new URL(route.request().url());
    if (url.pathname === "/page-info") {
      return route.fulfill({ contentType: "application/json", body: env("PAGE_INFO", '{"persona_name": "Ava", "greets": true}') });
    }
    const file = url.pathname === "/" ? "index.html" : url.pathname.slice(1);
    const type = file.endsWith(".js") ? "text/javascript" : "text/html";
    return route.fulfill({ contentType: type, body: fs.readFileSync(path.join(WEB, file)) });
  });
  try {
    await page.goto("http://page.test/");
    await page.waitForFunction(() => document.querySelector("#persona-name").textContent === "Ava");
    result.persona_name = await page.$eval("#persona-name", (e) => e.textContent);
    result.hint_before = await page.$eval("#hint", (e) => e.textContent);
    const events = JSON.parse(fs.readFileSync(env("EVENTS", "events.json"), "utf8"));
    await page.evaluate(() => { setState("connecting"); setState(idleState()); });
    result.states = [];
    for (const step of events) {
      if (step.mic_speech_end) {
        await page.evaluate(() => { lastMicSpeech = performance.now() - 1600; });
      } else if (step.bot_sound) {
        await page.evaluate(() => { if (pendingTurn) recordLatency(performance.now()); });
      } else {
        await page.evaluate((m) => showEvent(JSON.stringify(m)), step);
      }
      result.states.push(await page.$eval("#state", (e) => e.dataset.state));
    }
    result.state_text = await page.$eval("#state-text", (e) => e.textContent);
    result.lines = await page.$$eval("#conversation .turn", (els) => els.map((e) => ({
      role: e.classList.contains("user") ? "user" : "replica", text: e.querySelector(".text").textContent,
      streaming: e.classList.contains("streaming"), who: e.querySelector(".who").textContent })));
    result.caption = await page.$eval("#caption", (e) => e.textContent);
    result.chart_bars = await page.$$eval("#latency-chart g.bar", (g) => g.length);
    result.chart_rects = await page.$$eval("#latency-chart g.bar rect", (r) => r.map((x) => x.getAttribute("fill")));
    result.console_open = await page.$eval("#developer", (d) => d.open);
    result.event_rows = await page.$$eval("#events div", (rows) => rows.length);
    if (env("OPEN_CONSOLE", "")) {
      await page.click("#developer > summary");
      await page.check("#show-rtvi");
    }
    await page.screenshot({ path: env("SCREENSHOT", "replay.png"), fullPage: true });
  } catch (err) {
    result.error = String(err && err.message ? err.message : err);
  }
  fs.writeFileSync(env("RESULT", "result.json"), JSON.stringify(result, null, 2));
  await browser.close();
})();
