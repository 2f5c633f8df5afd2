// Manual check of the local page in a real browser, offline (no test framework).
// Needs Debian's chromium and playwright-core from npm (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1):
//   apt-get install chromium; (cd /tmp/pw && npm i playwright-core)
//   python -c "from tests.speech import write_question_wav as w; w('/tmp/pw/mic.wav', 'What is the capital of France?', lead_secs=6, tail_secs=40)"
//   python bot.py &   then   NODE_PATH=/tmp/pw/node_modules node scripts/browser_check.js
// It clicks Connect with the WAV as a fake microphone, prints when bot audio arrives
// (WebRTC inbound-rtp stats), counts requests to non-local hosts, and saves a screenshot.
const { chromium } = require('playwright-core');
(async () => {
  const external = [];
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      `--use-file-for-fake-audio-capture=${process.env.MIC_WAV || '/tmp/pw/mic.wav'}%noloop`,
      '--autoplay-policy=no-user-gesture-required'],
  });
  const page = await browser.newPage();
  page.on('request', (r) => { const u = new URL(r.url()); if (!['localhost', '127.0.0.1'].includes(u.hostname)) external.push(r.url()); });
  const t0 = Date.now();
  await page.goto(process.env.BOT_URL || 'http://localhost:7860/');
  await page.getByRole('button', { name: 'Connect', exact: true }).click();
  await page.waitForFunction(() => document.body.dataset.status === 'connected', null, { timeout: 30000 });
  console.log('connected after', (Date.now() - t0) / 1000, 's');
  let firstAudio = null, maxEnergy = 0;
  for (let i = 0; i < 90; i++) {
    await page.waitForTimeout(500);
    const s = await page.evaluate(async () => {
      const report = await pc.getStats();
      let out = { level: 0, energy: 0 };
      report.forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'audio') out = { level: r.audioLevel || 0, energy: r.totalAudioEnergy || 0 }; });
      return out;
    });
    if (s.energy > maxEnergy + 0.001) {
      const t = (Date.now() - t0) / 1000;
      if (firstAudio === null) firstAudio = t;
      console.log(`t=${t.toFixed(1)}s bot audio level=${s.level.toFixed(3)} energy=${s.energy.toFixed(3)}`);
      maxEnergy = s.energy;
    }
  }
  await page.screenshot({ path: process.env.SCREENSHOT || '/tmp/pw/page.png' });
  console.log('first bot audio at', firstAudio, 's; total energy', maxEnergy);
  console.log('external requests:', external.length, external.slice(0, 5));
  await browser.close();
})();
