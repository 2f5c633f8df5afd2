// Pipecat's own web client SDK against the bot, in headless Chromium (Debian's) with a fake
// microphone, offline. Bundles pipecat_client_entry.js with esbuild into BUNDLE_DIR, serves it
// as a page on the bot's own origin (page.route: the browser never asks the bot for it), then:
//   1. startBotAndConnect (POST /start, /sessions/{id}/api/offer): the microphone asks a question;
//      waits for the user's transcript and a bot turn spoken after it;
//   2. connect (POST /api/offer) in a fresh page: waits for bot-ready and the bot's audio;
//   3. startBotAndConnect without the access token (when TOKEN is set): refused.
// Writes a JSON result for tests/test_pipecat_client.py; exits non-zero only on a crash.
//   BOT_URL=http://localhost:7860 TOKEN=... MIC_WAV=/abs/q.wav BUNDLE_DIR=/tmp/x RESULT=/abs/r.json \
//   node tests/browser/pipecat_client_check.js
"use strict";
const fs = require("fs");
const path = require("path");
const esbuild = require("esbuild");
const { env, launchWithFakeMic, recordOffOriginRequests, rawMicrophone } = require("./browser");

const ORIGIN = new URL(env("BOT_URL", "http://localhost:7860")).origin;
const PAGE_PATH = "/pipecat-client-test/";  // answered by page.route, never by the bot
const REPLY_SECS = Number(env("REPLY_SECS", "45"));
const TOKEN = env("TOKEN", "");
const result = { steps: [], step_secs: [], requests: [], off_origin_requests: [], console_errors: [], phases: {} };
const t0 = Date.now();
const done = (step) => { result.steps.push(step); result.step_secs.push((Date.now() - t0) / 1000); };

function bundle() {
  const outfile = path.join(env("BUNDLE_DIR", fs.mkdtempSync("/tmp/pipecat-client-")), "pipecat_client.js");
  esbuild.buildSync({
    entryPoints: [path.join(__dirname, "pipecat_client_entry.js")], bundle: true, format: "iife",
    platform: "browser", target: "chrome120", outfile, logLevel: "warning",
  });
  return fs.readFileSync(outfile, "utf8");
}

let phase = "bundle";

async function openPage(browser, code) {
  const page = await browser.newPage();
  await rawMicrophone(page);
  recordOffOriginRequests(page, ORIGIN, result.off_origin_requests);
  page.on("response", (response) => {
    const request = response.request();
    const url = new URL(request.url());
    if (url.origin === ORIGIN && !url.pathname.startsWith(PAGE_PATH)) {
      result.requests.push({ phase, method: request.method(), path: url.pathname, status: response.status() });
    }
  });
  page.on("requestfailed", (request) => result.requests.push({ phase, method: request.method(),
    path: request.url(), status: 0, failure: (request.failure() || {}).errorText }));
  page.on("console", (msg) => {
    if (msg.type() === "error" && result.console_errors.length < 30) result.console_errors.push(msg.text());
  });
  page.on("pageerror", (err) => result.console_errors.push(`pageerror: ${err.message}`));
  await page.route(`${ORIGIN}${PAGE_PATH}**`, (route) => {
    const url = new URL(route.request().url());
    if (url.pathname.endsWith(".js")) {
      return route.fulfill({ status: 200, contentType: "text/javascript", body: code });
    }
    return route.fulfill({ status: 200, contentType: "text/html",
      body: `<!doctype html><html><head><title>Pipecat client</title></head><body>
             <script src="${PAGE_PATH}pipecat_client.js"></script></body></html>` });
  });
  await page.goto(`${ORIGIN}${PAGE_PATH}index.html`);
  await page.waitForFunction(() => typeof window.runPipecatClient === "function", null, { timeout: 10000 });
  return page;
}

// The SDK's connect() waits for bot-ready and neither resolves nor rejects when the transport
// stops before it (e.g. a refused renegotiation): give each step a deadline.
function within(promise, secs, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${secs} s`)), secs * 1000);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

// The SDK ends a session it cannot keep (e.g. an offer refused with a 4xx): say so at once.
async function stillConnected(page) {
  const gone = await page.evaluate(() => window.pipecatLog.find((e) => e.event === "disconnected"));
  if (gone) throw new Error(`the SDK disconnected at ${gone.t} ms (requests: ${JSON.stringify(result.requests)})`);
}

const collect = async (page) => page.evaluate(() => ({ log: window.pipecatLog, audio: window.audioLog }));

(async () => {
  let browser;
  let page;
  try {
    const code = bundle();
    done("bundled");
    browser = await launchWithFakeMic();

    // 1. startBotAndConnect: the question, then a bot turn after its transcript.
    phase = "start";
    page = await openPage(browser, code);
    await within(page.evaluate((token) => window.runPipecatClient("start", token), TOKEN), 30, "startBotAndConnect");
    done("start connected");
    await page.waitForFunction(() => {
      const log = window.pipecatLog;
      if (log.some((e) => e.event === "disconnected")) return true;  // reported below
      const heard = log.findIndex((e) => e.event === "userTranscript" && e.data && e.data.final &&
        (e.data.text || "").trim());
      if (heard < 0) return false;
      const after = log.slice(heard + 1);
      const started = after.findIndex((e) => e.event === "botStartedSpeaking");
      return started >= 0 && after.slice(started).some((e) => e.event === "botStoppedSpeaking");
    }, null, { timeout: REPLY_SECS * 1000, polling: 200 });
    await stillConnected(page);
    await page.waitForTimeout(600);  // the last stats sample after the reply
    result.phases.start = await collect(page);
    await page.evaluate(() => window.pipecatStop());
    await page.close();
    done("start replied");

    // 2. connect() to /api/offer: bot-ready and the bot's (greeting) audio.
    phase = "offer";
    page = await openPage(browser, code);
    await within(page.evaluate((token) => window.runPipecatClient("offer", token), TOKEN), 30, "connect");
    done("offer connected");
    await page.waitForFunction(() => window.pipecatLog.some((e) => e.event === "disconnected") ||
      (window.pipecatLog.some((e) => e.event === "botStoppedSpeaking") &&
       window.audioLog.some((a) => a.energy > 0)), null, { timeout: 30000, polling: 200 });
    await stillConnected(page);
    result.phases.offer = await collect(page);
    await page.evaluate(() => window.pipecatStop());
    await page.close();
    done("offer heard");

    // 3. Without the access token the SDK is told so (401) and starts nothing.
    if (TOKEN) {
      phase = "no token";
      page = await openPage(browser, code);
      result.no_token = await within(page.evaluate(() => window.runPipecatClient("start", null)
        .then(() => "connected", (err) => ({ name: err.name, status: err.status, message: err.message }))),
      30, "startBotAndConnect without the token");
      done("no token refused");
    }
  } catch (err) {
    result.error = `${phase}: ${String(err && err.message ? err.message : err)}`;
    if (page && !page.isClosed() && !result.phases[phase]) {
      result.phases[phase] = await collect(page).catch(() => null);
    }
  }
  result.total_secs = (Date.now() - t0) / 1000;
  fs.writeFileSync(env("RESULT", "result.json"), JSON.stringify(result, null, 2));
  if (browser) await browser.close();
})();
