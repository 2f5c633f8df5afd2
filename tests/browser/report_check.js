// A persona test report (persona_tests/report.py) in headless Chromium, offline: opens the HTML
// file, reports its sections, timeline items, whether its inline WAVs decode (audio duration),
// whether any script from the data ran (window.alert), and whether clicking a timeline item
// seeks the audio. For tests/test_persona_report.py.
//   REPORT=/abs/report.html RESULT=/abs/r.json SCREENSHOT=/abs/p.png node tests/browser/report_check.js
"use strict";
const fs = require("fs");
const { pathToFileURL } = require("url");
const { chromium } = require("playwright-core");

const env = (name, fallback) => process.env[name] || fallback;
const result = { requests: [] };

(async () => {
  const browser = await chromium.launch({
    executablePath: env("CHROMIUM", "/usr/bin/chromium"), headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
      "--autoplay-policy=no-user-gesture-required"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  // Anything but the report itself and its data: URIs is an external resource.
  page.on("request", (req) => {
    const url = req.url();
    if (!url.startsWith("data:") && !url.startsWith("file:")) result.requests.push(url);
  });
  await page.addInitScript(() => {
    window.__alerts = [];
    window.alert = (msg) => { window.__alerts.push(String(msg)); };
  });
  try {
    await page.goto(pathToFileURL(env("REPORT", "report.html")).href, { waitUntil: "load" });
    result.title = await page.title();
    result.conversations = await page.$$eval(".conversation", (els) => els.map((s) => ({
      id: s.id, passed: s.classList.contains("passed"), failed: s.classList.contains("failed"),
      tl_items: s.querySelectorAll(".tl-item").length,
      audio: s.querySelectorAll("audio").length,
      failed_expectations: s.querySelectorAll(".failed-expectation").length,
    })));
    await page.waitForFunction(() => [...document.querySelectorAll("audio")].every(
      (a) => a.readyState >= 1 || a.error), null, { timeout: 20000 });
    result.audio = await page.$$eval("audio", (els) => els.map((a) => ({
      cls: a.className, duration: a.duration, error: a.error ? a.error.code : null,
      section: a.closest(".conversation").id })));
    result.failed_expectations = await page.$$eval(".failed-expectation", (els) => els.length);
    result.failed_expectation_bg = await page.$eval(".failed-expectation",
      (e) => getComputedStyle(e).backgroundColor).catch(() => null);
    result.failed_texts = await page.$$eval(".failed-expectation", (els) => els.map((e) => e.textContent));
    // Click the last span-free point item of the first conversation with items (not at t=0).
    const target = await page.evaluateHandle(() => {
      const items = [...document.querySelectorAll(".conversation .tl-item")];
      return items.filter((i) => parseFloat(i.dataset.t) > 0.2).pop() || items[0];
    });
    result.clicked = await target.evaluate((el) => ({
      t: parseFloat(el.dataset.t), kind: [...el.classList].find((c) => c.startsWith("tl-") && c !== "tl-item"),
      title: el.title, section: el.closest(".conversation").id }));
    await target.click({ force: true });
    await page.waitForTimeout(300);
    result.current_times = await page.$$eval(`#${result.clicked.section} audio`,
      (els) => els.map((a) => a.currentTime));
    result.cursor_shown = await page.$eval(`#${result.clicked.section} .tl-cursor`,
      (c) => getComputedStyle(c).display !== "none");
    result.alerts = await page.evaluate(() => window.__alerts);
    result.scripts = await page.$$eval("script", (s) => s.length);
    await page.screenshot({ path: env("SCREENSHOT", "report.png"), fullPage: true });
  } catch (err) {
    result.error = String(err && err.message ? err.message : err);
  }
  fs.writeFileSync(env("RESULT", "result.json"), JSON.stringify(result, null, 2));
  await browser.close();
})();
