// Plain WebRTC client for the Pipecat runner's SmallWebRTC transport: who you are talking to,
// what the conversation is doing (connecting / greeting / listening / thinking / speaking), the
// conversation one line per utterance, captions, per-turn latency as a chart, and a Tavus
// interactions console. No libraries, no build step, and no network requests beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
let pc = null;
let mic = null;
let channel = null;
// The bot looks at about one frame a second, but decodes every frame it receives: send few.
const CAMERA_CONSTRAINTS = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 5, max: 10 } };
const SCREEN_CONSTRAINTS = { frameRate: { ideal: 2, max: 5 } };
let shared = null; // the shared screen's stream (getDisplayMedia), when "share my screen" is on
let pcId = null; // the bot's id for this peer connection (its answer's pc_id), for renegotiation
let conversationId = null;
let timers = [];

// ------------------------------------------------------------------ microphone processing

// Browser audio processing: Chrome's echo cancellation, noise suppression and auto gain
// control. Measured with benchmarks/page_wer.py (README, "Hearing you well"): echo
// cancellation stays on (a person with speakers needs it; it cost nothing measurable here);
// Chrome's noise suppression and gain control are off by default: they did not help Whisper
// and stacked on the bot's RNNoise they cost the most words (synthetic voices 41 % -> 48 %,
// human recordings 17 % -> 24 % word error rate). ?ec=0&ns=1&agc=1 switch each one.
const QUERY = new URLSearchParams(location.search);
const flag = (name, fallback) => (QUERY.has(name) ? !["0", "false", "off"].includes(QUERY.get(name)) : fallback);
// The access token the bot printed with its URL (?token=...; needed when it listens beyond
// this machine): sent with every request to this server.
const TOKEN = QUERY.get("token");
const authHeaders = () => (TOKEN ? { "X-Access-Token": TOKEN } : {});

const AUDIO_CONSTRAINTS = {
  echoCancellation: flag("ec", true),
  noiseSuppression: flag("ns", false),
  autoGainControl: flag("agc", false),
};

// Every data-channel message with its arrival time (ms since the microphone opened), and every
// state change, for tests and benchmarks: window.eventLog, window.stateLog.
window.eventLog = [];
window.stateLog = [];
let micOpenedAt = null;
const sinceMic = () => (micOpenedAt === null ? null : performance.now() - micOpenedAt);

// ------------------------------------------------------------------ who and what state

let personaName = "the persona";
let greets = true;
let greeted = false; // the persona has spoken once (its greeting)
let state = "disconnected";
let userSpeaking = false;
let botSpeaking = false;

const STATE_TEXT = {
  disconnected: () => "Not connected",
  connecting: () => "Connecting…",
  greeting: () => `${personaName} is about to greet you…`,
  listening: () => (userSpeaking ? "Listening… (hearing you)" : "Listening: your turn to speak"),
  thinking: () => `${personaName} is thinking…`,
  speaking: () => `${personaName} is speaking`,
};

function hintFor(next) {
  if (next === "disconnected") return "Press Connect and allow the microphone.";
  if (next === "connecting") return greets ? `${personaName} speaks first: wait for the greeting, then talk.` : "";
  if (next === "greeting") return `Wait for ${personaName}'s greeting, then speak.`;
  if (next === "speaking") return "You can interrupt by speaking.";
  if (next === "thinking") return "";
  return greeted || !greets ? `Speak naturally; ${personaName} answers when you pause.` : "";
}

function setState(next) {
  if (next !== state) {
    state = next;
    window.stateLog.push({ state: next, t: sinceMic() });
  }
  document.body.dataset.state = next;
  $("state").dataset.state = next;
  $("state-text").textContent = STATE_TEXT[next]();
  $("hint").textContent = hintFor(next);
}

function setUserSpeaking(on) {
  userSpeaking = on;
  document.body.dataset.userSpeaking = on ? "yes" : "no";
  if (state === "listening") setState("listening");
}

function idleState() {
  return greets && !greeted ? "greeting" : "listening";
}

async function loadPageInfo() {
  try {
    const response = await fetch("/page-info", { headers: authHeaders() });
    const info = response.ok ? await response.json() : {};
    if (info.persona_name) personaName = info.persona_name;
    if (info.greets === false) greets = false;
  } catch { /* the page works without it */ }
  $("persona-name").textContent = personaName;
  document.title = `Talk to ${personaName} (local)`;
  const initial = personaName === "the persona" ? "?" : personaName.trim().charAt(0).toUpperCase();
  $("avatar").textContent = initial;
  $("orb").textContent = initial;
  setState(state);
}

// ------------------------------------------------------------------ latency

// End of the user's speech (heard on our own microphone) -> the persona's first sound (heard
// in the WebRTC inbound audio stats), with the turn's stages from Pipecat's RTVI metrics.
const SPEECH_LEVEL = 0.02; // RMS of the microphone signal that counts as speech
const BOT_ENERGY_STEP = 0.0005; // growth of totalAudioEnergy per poll that counts as sound
let lastMicSpeech = 0; // performance.now() of the last loud microphone sample
let pendingTurn = null; // {speechEnd, inferenceId} waiting for the bot's first sound
let lastBotEnergy = 0;
let botSounding = false;
let stages = {}; // {stt, llm, tts} seconds of the turn in progress (RTVI metrics)
const latencies = []; // [{seconds, stages}]

function log(line) {
  $("log").textContent += `${new Date().toLocaleTimeString()} ${line}\n`;
  $("log").scrollTop = $("log").scrollHeight;
}

// Why the last connection attempt failed (the server's one-line reason: busy, a token
// needed, ...), shown until the next Connect.
function showProblem(text) {
  const problem = $("problem");
  problem.textContent = text || "";
  problem.hidden = !text;
}

async function refusal(response) {
  let detail = "";
  try { detail = (await response.json()).detail || ""; } catch { /* not JSON */ }
  if (typeof detail !== "string") detail = JSON.stringify(detail);
  if (response.status === 503) {
    const wait = response.headers.get("Retry-After");
    return `${personaName} is busy with other conversations right now. Please try again` +
      (wait ? ` in about ${wait} seconds.` : " in a little while.") + (detail ? ` (${detail})` : "");
  }
  if (response.status === 401) return `This page needs the link with its access token. (${detail})`;
  return `Could not connect: ${detail || `HTTP ${response.status}`}`;
}

function setStatus(text) {
  $("status").textContent = text;
  document.body.dataset.status = text.toLowerCase();
}

function waitForIce(peer) {
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => {
      if (peer.iceGatheringState === "complete") {
        peer.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
    };
    peer.addEventListener("icegatheringstatechange", check);
    setTimeout(resolve, 2000); // host candidates are enough on this machine
  });
}

function watchMicrophone(stream) {
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 1024;
  context.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  timers.push(setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    if (Math.sqrt(sum / samples.length) > SPEECH_LEVEL) lastMicSpeech = performance.now();
  }, 20));
  timers.push({ close: () => context.close() });
}

function watchBotAudio() {
  timers.push(setInterval(async () => {
    if (!pc) return;
    const report = await pc.getStats();
    report.forEach((r) => {
      if (r.type !== "inbound-rtp" || r.kind !== "audio") return;
      const energy = r.totalAudioEnergy || 0;
      const sounding = energy - lastBotEnergy > BOT_ENERGY_STEP;
      lastBotEnergy = energy;
      document.body.dataset.botAudio = energy > 0 ? "yes" : "no";
      // The reply's first sound: silence -> sound after the user's turn ended.
      if (sounding && !botSounding && pendingTurn) recordLatency(performance.now());
      botSounding = sounding;
    });
  }, 50));
}

function onMetrics(data) {
  // RTVI metrics: {ttfb: [{processor, value}], processing: [...]}; keep the turn's last
  // non-zero figure per stage (Whisper reports processing time, LLM and TTS time to first byte).
  const take = (list, key) => {
    for (const m of list || []) {
      if (!m.value) continue;
      const p = String(m.processor || "");
      const stage = /STT/i.test(p) ? "stt" : /LLM/i.test(p) ? "llm" : /TTS/i.test(p) ? "tts" : null;
      if (stage && (key === "ttfb" || stage === "stt")) stages[stage] = m.value;
    }
  };
  take(data.processing, "processing");
  take(data.ttfb, "ttfb");
}

function recordLatency(now) {
  const seconds = (now - pendingTurn.speechEnd) / 1000;
  latencies.push({ seconds, stages: { ...stages } });
  $("latency").textContent = `${seconds.toFixed(2)} s (last turn; ${latencies.length} measured)`;
  $("latency").dataset.seconds = seconds.toFixed(3);
  const turn = document.querySelector(`.turn.user[data-inference="${CSS.escape(pendingTurn.inferenceId || "")}"]`)
    || [...document.querySelectorAll(".turn.user")].pop();
  if (turn && !turn.querySelector(".latency")) {
    const note = document.createElement("span");
    note.className = "latency";
    note.textContent = `reply after ${seconds.toFixed(2)} s`;
    turn.append(note);
  }
  const parts = ["stt", "llm", "tts"].filter((k) => stages[k])
    .map((k) => `${{ stt: "speech to text", llm: "language model", tts: "text to speech" }[k]} ${stages[k].toFixed(2)} s`);
  $("latency-detail").textContent = parts.length ? `Last turn: ${parts.join(" · ")}` : "";
  pendingTurn = null;
  drawLatency();
}

const STAGE_COLORS = { stt: "#5b8def", llm: "#a26be0", tts: "#f0a04b", rest: "#c9ced6" };

function drawLatency() {
  const svg = $("latency-chart");
  const shown = latencies.slice(-12);
  const W = 320, H = 120, top = 12, bottom = 14, left = 22;
  const max = Math.max(2, ...shown.map((l) => l.seconds)) * 1.1;
  const y = (s) => H - bottom - (s / max) * (H - top - bottom);
  const slot = (W - left) / Math.max(shown.length, 6);
  const parts = [];
  for (let s = 0; s <= max; s += max > 6 ? 2 : 1) {
    parts.push(`<line x1="${left}" x2="${W}" y1="${y(s)}" y2="${y(s)}" stroke="#eef0f3"/>`,
               `<text x="2" y="${y(s) + 3}">${s} s</text>`);
  }
  shown.forEach((l, i) => {
    const x = left + i * slot + slot * 0.15, w = slot * 0.7;
    let acc = 0;
    const seg = [];
    for (const stage of ["stt", "llm", "tts"]) {
      const v = Math.min(l.stages[stage] || 0, Math.max(0, l.seconds - acc));
      if (v > 0) seg.push([stage, acc, v]);
      acc += v;
    }
    if (l.seconds > acc) seg.push(["rest", acc, l.seconds - acc]);
    const title = `turn ${latencies.length - shown.length + i + 1}: ${l.seconds.toFixed(2)} s` +
      ["stt", "llm", "tts"].filter((k) => l.stages[k]).map((k) => `, ${k.toUpperCase()} ${l.stages[k].toFixed(2)} s`).join("");
    parts.push(`<g class="bar" data-seconds="${l.seconds.toFixed(3)}"><title>${title}</title>`);
    for (const [stage, from, v] of seg) {
      parts.push(`<rect x="${x}" width="${w}" y="${y(from + v)}" height="${Math.max(0.5, y(from) - y(from + v))}" fill="${STAGE_COLORS[stage]}"/>`);
    }
    parts.push(`<text x="${x + w / 2}" y="${y(l.seconds) - 2}" text-anchor="middle">${l.seconds.toFixed(1)}</text>`,
               `<text x="${x + w / 2}" y="${H - 3}" text-anchor="middle">${latencies.length - shown.length + i + 1}</text></g>`);
  });
  svg.innerHTML = parts.join("");
  svg.dataset.turns = String(latencies.length);
}

// ------------------------------------------------------------------ conversation view

// One line per utterance, keyed by role and inference id. A reply can be spoken in several
// segments (the bot stops and starts speaking within one inference); each segment's streaming
// text accumulates only that segment, so the line keeps the finished segments.
const lines = new Map();
let lateLines = 0;

function lineFor(role, inferenceId, { create = true } = {}) {
  const key = `${role}:${inferenceId || "none"}`;
  let line = lines.get(key);
  if (!line && create) {
    const el = document.createElement("div");
    el.className = `turn ${role}`;
    el.dataset.key = key;
    el.dataset.inference = inferenceId || "";
    el.innerHTML = `<span class="who"></span><span class="text"></span>`;
    el.querySelector(".who").textContent = role === "user" ? "You" : personaName;
    $("conversation").append(el);
    line = { key, role, el, segments: [], current: "", closed: false, final: false };
    lines.set(key, line);
  }
  return line;
}

function lineText(line) {
  return [...line.segments, line.current].map((s) => s.trim()).filter(Boolean).join(" ");
}

function renderLine(line, { interrupted = false } = {}) {
  line.el.querySelector(".text").textContent = lineText(line);
  line.el.classList.toggle("streaming", line.role === "user" && !line.final);
  let note = line.el.querySelector(".note");
  if (interrupted && !note) {
    note = document.createElement("span");
    note.className = "note";
    note.textContent = "(interrupted)";
    line.el.querySelector(".text").after(note);
  }
  const box = $("conversation");
  box.scrollTop = box.scrollHeight;
  if (!closedCaptions && lineText(line)) setCaption(line.role, lineText(line));
}

function replicaSpeech(inferenceId, p) {
  const line = lineFor("replica", inferenceId);
  const speech = p.speech || "";
  if (line.closed || (p.content_index === 0 && line.current && !speech.startsWith(line.current))) {
    if (line.current.trim()) line.segments.push(line.current);
    line.current = "";
    line.closed = false;
  }
  line.current = speech;
  if (p.final) line.closed = true;
  renderLine(line, { interrupted: !!p.is_interrupted });
}

function userSpeech(inferenceId, speech, final) {
  if (!speech) return;
  let line = lineFor("user", inferenceId, { create: false });
  if (line && line.final && !final) {
    // A partial of the next turn still carrying the previous turn's id: never overwrite a
    // finished line; it starts a line of its own (replaced by its final utterance).
    lateLines += 1;
    line = lineFor("user", `${inferenceId || "none"}~${lateLines}`);
  }
  const stale = [...lines.values()].filter((l) => l.role === "user" && !l.final && l !== line);
  if (!line && final && stale.length) {
    // The final utterance's inference id differs from the streaming one (a new VAD segment or
    // speculative inference started a new id): the streaming line becomes the final one.
    line = stale.shift();
    lines.delete(line.key);
    line.key = `user:${inferenceId || "none"}`;
    line.el.dataset.key = line.key;
    line.el.dataset.inference = inferenceId || "";
    lines.set(line.key, line);
  }
  line = line || lineFor("user", inferenceId);
  if (final) {
    for (const old of stale) { // partial lines of this same turn: the final text replaces them
      if (old === line) continue;
      old.el.remove();
      lines.delete(old.key);
    }
    line.final = true;
  }
  line.current = speech;
  renderLine(line);
}

// With enable_closed_captions the bot sends conversation.closed_caption events and the
// caption bar follows them; otherwise it follows the streaming utterances.
let closedCaptions = false;

function setCaption(role, text) {
  $("caption").innerHTML = `<span class="who"></span><span></span>`;
  $("caption").firstChild.textContent = role === "user" ? "You:" : `${personaName}:`;
  $("caption").lastChild.textContent = text;
}

// ------------------------------------------------------------------ events

function botStartedSpeaking() {
  if (botSpeaking) return;
  botSpeaking = true;
  setState("speaking");
}

function botStoppedSpeaking() {
  if (!botSpeaking) return;
  botSpeaking = false;
  greeted = true;
  setState("listening");
}

function userStarted() {
  setUserSpeaking(true);
  stages = {};
  if (!botSpeaking) setState("listening");
}

function userStopped(inferenceId) {
  setUserSpeaking(false);
  if (!botSpeaking) setState("thinking");
  if (lastMicSpeech && (inferenceId || !pendingTurn)) pendingTurn = { speechEnd: lastMicSpeech, inferenceId };
}

function onRtvi(message) {
  switch (message.type) {
    case "user-started-speaking": userStarted(); break;
    case "user-stopped-speaking": userStopped(null); break;
    case "bot-llm-started": if (!botSpeaking && state !== "greeting") setState("thinking"); break;
    case "bot-started-speaking": botStartedSpeaking(); break;
    case "bot-stopped-speaking": botStoppedSpeaking(); break;
    case "metrics": onMetrics(message.data || {}); break;
  }
}

function onEvent(message) {
  const p = message.properties || {};
  switch (message.event_type) {
    case "conversation.closed_caption":
      closedCaptions = true;
      setCaption(p.role, p.text);
      break;
    case "conversation.utterance.streaming":
      if (p.role === "user") userSpeech(message.inference_id, p.speech, false);
      else replicaSpeech(message.inference_id, p);
      break;
    case "conversation.utterance":
      if (p.role === "user") userSpeech(message.inference_id, p.speech, true);
      break;
    case "conversation.user.started_speaking": userStarted(); break;
    case "conversation.user.stopped_speaking": userStopped(message.inference_id); break;
    case "conversation.replica.started_speaking": botStartedSpeaking(); break;
    case "conversation.replica.stopped_speaking": {
      const line = lineFor("replica", message.inference_id, { create: false });
      if (line && !lineText(line) && p.duration) { // nothing streamed: show the utterance's text
        const utterance = window.eventLog.slice().reverse().find((e) =>
          e.message.event_type === "conversation.utterance" && e.message.inference_id === message.inference_id);
        if (utterance) { line.current = utterance.message.properties.speech; renderLine(line); }
      }
      botStoppedSpeaking();
      break;
    }
  }
}

function showEvent(data) {
  let message;
  try { message = JSON.parse(data); } catch { return; }
  window.eventLog.push({ t: sinceMic(), message });
  if (message.type === "signalling") { onSignalling(message.message || {}); return; }
  const rtvi = message.label === "rtvi-ai";
  if (rtvi) onRtvi(message);
  else if (message.event_type) {
    conversationId = message.conversation_id || conversationId;
    onEvent(message);
    if (message.event_type === "system.replica_present") return; // the 5 s heartbeat: kept in eventLog only
  } else return;
  const row = document.createElement("div");
  row.dataset.type = rtvi ? `rtvi:${message.type}` : message.event_type;
  row.dataset.rtvi = rtvi ? "yes" : "no";
  row.textContent = JSON.stringify(message);
  row.hidden = !matchesFilter(row);
  $("events").prepend(row);
  while ($("events").children.length > 600) $("events").lastChild.remove();
}

function matchesFilter(row) {
  if (row.dataset.rtvi === "yes" && !$("show-rtvi").checked) return false;
  const filter = $("filter").value.trim();
  return !filter || row.textContent.includes(filter);
}

// ------------------------------------------------------------------ interactions console

// Property templates for the console, one per interaction (Tavus wire formats).
const TEMPLATES = {
  "conversation.respond": { text: "What can you do?" },
  "conversation.echo": { modality: "text", text: "I will say exactly this.", done: true },
  "conversation.interrupt": null,
  "conversation.overwrite_llm_context": { context: "The user is called Sam." },
  "conversation.append_llm_context": { context: "Sam prefers short answers." },
  "conversation.sensitivity": {
    participant_pause_sensitivity: "medium", participant_interrupt_sensitivity: "medium" },
  "conversation.tool_result": { tool_call_id: "call_...", output: "result", status: "success" },
};

// The largest message the bot's data channel takes: aiortc advertises
// a=max-message-size:262144 in the bot's SDP and the browser refuses anything larger in
// send() (pipeline/interactions/models.py MAX_MESSAGE_BYTES is the same limit).
const MAX_MESSAGE_BYTES = 256 * 1024;

function sendInteraction() {
  const eventType = $("event-type").value;
  // The bot takes Tavus's raw messages too (transports/webrtc_messages.py); "type" keeps
  // this page working with Pipecat's plain SmallWebRTC transport, which drops JSON without it.
  const message = { type: "tavus", message_type: "conversation", event_type: eventType };
  if (conversationId) message.conversation_id = conversationId;
  const raw = $("properties").value.trim();
  if (raw) {
    try { message.properties = JSON.parse(raw); } catch (err) {
      log(`properties are not JSON: ${err.message}`);
      return;
    }
  }
  const text = JSON.stringify(message);
  const size = new TextEncoder().encode(text).length;
  const limit = (pc && pc.sctp && pc.sctp.maxMessageSize) || MAX_MESSAGE_BYTES;
  if (size > limit) {
    log(`not sent: ${eventType} is ${size} bytes; the data channel takes at most ${limit} bytes`);
    return;
  }
  try { channel.send(text); } catch (err) {
    log(`not sent: ${eventType}: ${err.message}`);
    return;
  }
  log(`sent ${eventType}`);
}

function fillTemplate() {
  const template = TEMPLATES[$("event-type").value];
  $("properties").value = template ? JSON.stringify(template, null, 2) : "";
}

// ------------------------------------------------------------------ connection

async function connect() {
  showProblem("");
  screenNote("");
  $("connect").disabled = true;
  setStatus("Connecting");
  setState("connecting");
  try {
    const withCamera = $("camera").checked;
    // The screen picker first: Chrome lets getDisplayMedia open it only shortly after the click
    // (transient user activation), and the microphone's permission prompt can outlast that.
    if ($("share-screen").checked) shared = await shareScreen();
    mic = await navigator.mediaDevices.getUserMedia({ audio: AUDIO_CONSTRAINTS, video: withCamera && CAMERA_CONSTRAINTS });
    micOpenedAt = performance.now();
    window.micOpenedAtMs = micOpenedAt;
    window.micSettings = mic.getAudioTracks()[0].getSettings();
    const s = window.micSettings;
    $("mic-settings").textContent = `echo cancellation ${s.echoCancellation ? "on" : "off"}, ` +
      `noise suppression ${s.noiseSuppression ? "on" : "off"}, auto gain ${s.autoGainControl ? "on" : "off"}`;
    watchMicrophone(mic);
    pc = new RTCPeerConnection({ iceServers: [] });
    channel = pc.createDataChannel("chat");
    channel.onopen = () => { $("send").disabled = false; };
    channel.onmessage = (event) => showEvent(event.data);
    // Pipecat's SmallWebRTC reads the transceivers by their order (connection.py: index 0 the
    // microphone, 1 the camera, 2 the screen share): the camera's transceiver is always added
    // (the replica's video comes back on it), the screen's only when one is shared.
    pc.addTransceiver(mic.getAudioTracks()[0], { direction: "sendrecv" });
    const video = withCamera ? pc.addTransceiver(mic.getVideoTracks()[0], { direction: "sendrecv" })
      : pc.addTransceiver("video", { direction: "recvonly" });
    if (shared) withoutRetransmissionStream(pc.addTransceiver(shared.getVideoTracks()[0], { direction: "sendonly" }));
    window.sentVideo = { camera: withCamera, screen: !!shared };
    pc.ontrack = (event) => {
      if (event.track.kind === "audio") {
        $("bot-audio").srcObject = new MediaStream([event.track]);
      } else if (event.transceiver === video) {
        $("bot-video").srcObject = new MediaStream([event.track]);
        event.track.onunmute = () => { // the replica's video (when the bot sends one)
          $("bot-video").style.display = "block";
          $("screen").classList.add("has-video");
        };
      }
    };
    pc.onconnectionstatechange = () => {
      log(`connection: ${pc.connectionState}`);
      if (pc.connectionState === "connected") {
        setStatus("Connected");
        if (state === "connecting") setState(idleState());
      }
      if (["failed", "closed", "disconnected"].includes(pc.connectionState)) disconnect();
    };
    const response = await sendOffer();
    if (!response.ok) {
      const reason = await refusal(response);
      log(`offer refused: HTTP ${response.status}: ${reason}`);
      disconnect();
      showProblem(reason);
      $("hint").textContent = reason;
      return;
    }
    const answer = await response.json();
    pcId = answer.pc_id || null;
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    watchBotAudio();
    $("disconnect").disabled = false;
    $("mute").disabled = false;
    log("offer answered; waiting for media");
  } catch (err) {
    log(`error: ${err.message || err}`);
    disconnect();
    showProblem(`Could not connect: ${err.message || err}`);
  }
}

// The offer (a new connection, or with pcId a renegotiation of this one) after ICE gathering.
async function sendOffer() {
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIce(pc);
  const offer = { sdp: pc.localDescription.sdp, type: pc.localDescription.type };
  if (pcId) Object.assign(offer, { pc_id: pcId, restart_pc: false });
  return fetch("/api/offer", {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authHeaders() },
    body: JSON.stringify(offer),
  });
}

// ------------------------------------------------------------------ screen sharing

// The screen's video without its retransmission stream (video/rtx): the bot's aiortc routes a
// packet by its SSRC, registers only the primary SSRCs, and takes an unknown SSRC only when its
// payload type belongs to one receiver. With two video transceivers both offering rtx, every
// retransmission was dropped and the camera stalled after its first lost packet (measured: one
// camera frame in 15 s beside a shared screen; camera alone 7). Without rtx on the screen, the
// camera's rtx payload types are its own, and the screen's lost packets are resent as they are.
function withoutRetransmissionStream(transceiver) {
  try {
    const codecs = RTCRtpReceiver.getCapabilities("video").codecs.filter((c) => c.mimeType.toLowerCase() !== "video/rtx");
    transceiver.setCodecPreferences(codecs);
  } catch (err) {
    log(`screen codecs left as they are: ${err.message || err}`);
  }
  return transceiver;
}

// The screen (or window, or tab) the user picks, or null when they cancel the picker or the
// browser cannot share one: the conversation goes on without it, saying so.
async function shareScreen() {
  if (!navigator.mediaDevices.getDisplayMedia) {
    screenNote("This browser cannot share a screen: connecting without it.");
    return null;
  }
  try {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: SCREEN_CONSTRAINTS, audio: false });
    const track = stream.getVideoTracks()[0];
    track.onended = screenEnded; // the browser's "Stop sharing", or the shared window closed
    screenNote(`Sharing your screen with ${personaName}.`);
    log(`sharing the screen: ${track.label || "screen"}`);
    return stream;
  } catch (err) {
    const cancelled = err && err.name === "NotAllowedError";
    screenNote(cancelled ? "Screen sharing was cancelled: connecting without your screen."
      : `Could not share the screen (${err.message || err}): connecting without it.`);
    log(`screen not shared: ${err.name || ""} ${err.message || err}`.trim());
    return null;
  }
}

function screenEnded() {
  screenNote(`You stopped sharing your screen; ${personaName} no longer sees it.`);
  log("screen sharing ended");
  shared = null;
  sendSignalling({ type: "trackStatus", receiver_index: 2, enabled: false });
}

function screenNote(text) {
  $("screen-note").textContent = text || "";
  $("screen-note").hidden = !text;
}

// Pipecat's SmallWebRTC signalling over the data channel ({type: "signalling", message}).
function sendSignalling(message) {
  if (channel && channel.readyState === "open") channel.send(JSON.stringify({ type: "signalling", message }));
}

// The bot asks to renegotiate when its pipeline is ready for our video (connection.py: the
// frames sent before it started reading are lost, and a new offer gets a fresh key frame).
// Audio-only conversations never needed it, so they keep the one offer.
let renegotiating = false;
async function onSignalling(message) {
  if (message.type !== "renegotiate" || !pc || !pcId || renegotiating) return;
  if (!window.sentVideo || !(window.sentVideo.camera || window.sentVideo.screen)) return;
  renegotiating = true;
  try {
    const response = await sendOffer();
    if (!response.ok) throw new Error(`HTTP ${response.status}: ${await refusal(response)}`);
    const answer = await response.json();
    if (pc) await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    log("renegotiated (the bot is ready for the video)");
  } catch (err) {
    log(`renegotiation failed: ${err.message || err}`);
  } finally {
    renegotiating = false;
  }
}

function disconnect() {
  for (const timer of timers) {
    if (timer && timer.close) timer.close(); else clearInterval(timer);
  }
  timers = [];
  if (channel) channel.close();
  channel = null;
  $("send").disabled = true;
  if (pc) pc.close();
  if (mic) mic.getTracks().forEach((t) => t.stop());
  if (shared) shared.getTracks().forEach((t) => { t.onended = null; t.stop(); });
  pc = null;
  mic = null;
  shared = null;
  pcId = null;
  pendingTurn = null;
  lastBotEnergy = 0;
  botSounding = false;
  botSpeaking = false;
  greeted = false;
  setUserSpeaking(false);
  $("connect").disabled = false;
  $("disconnect").disabled = true;
  $("mute").disabled = true;
  $("mute").textContent = "Mute";
  setStatus("Disconnected");
  setState("disconnected");
}

function toggleMute() {
  if (!mic) return;
  const track = mic.getAudioTracks()[0];
  track.enabled = !track.enabled;
  $("mute").textContent = track.enabled ? "Mute" : "Unmute";
  log(track.enabled ? "microphone on" : "microphone muted");
}

$("connect").onclick = connect;
$("disconnect").onclick = disconnect;
$("mute").onclick = toggleMute;
$("send").onclick = sendInteraction;
$("event-type").onchange = fillTemplate;
const refilter = () => { for (const row of $("events").children) row.hidden = !matchesFilter(row); };
$("filter").oninput = refilter;
$("show-rtvi").onchange = refilter;
fillTemplate();
drawLatency();
loadPageInfo();
