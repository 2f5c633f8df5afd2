// Plain WebRTC client for the Pipecat runner's SmallWebRTC transport, with a live
// conversation view, captions, per-turn latency and a Tavus interactions console.
// No libraries, no build step, and no network requests beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
let pc = null;
let mic = null;
let channel = null;
let conversationId = null;
let timers = [];

// Latency: end of the user's speech (heard on our own microphone) -> the persona's
// first sound (heard in the WebRTC inbound audio stats).
const SPEECH_LEVEL = 0.02; // RMS of the microphone signal that counts as speech
const BOT_ENERGY_STEP = 0.0005; // growth of totalAudioEnergy per poll that counts as sound
let lastMicSpeech = 0; // performance.now() of the last loud microphone sample
let pendingTurn = null; // {speechEnd, inferenceId} waiting for the bot's first sound
let lastBotEnergy = 0;
let botSounding = false;
const latencies = [];

// Browser audio processing (Chrome's echo cancellation, noise suppression, auto gain control).
// ?ec=0&ns=0&agc=0 switch each off, for measurement (benchmarks/page_wer.py).
const QUERY = new URLSearchParams(location.search);
const flag = (name, fallback) => (QUERY.has(name) ? !["0", "false", "off"].includes(QUERY.get(name)) : fallback);
const AUDIO_CONSTRAINTS = {
  echoCancellation: flag("ec", true),
  noiseSuppression: flag("ns", true),
  autoGainControl: flag("agc", true),
};
// Every data-channel message with its arrival time (ms since the microphone opened), for
// tests and benchmarks: window.eventLog.
window.eventLog = [];
let micOpenedAt = null;

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

function log(line) {
  $("log").textContent += `${new Date().toLocaleTimeString()} ${line}\n`;
  $("log").scrollTop = $("log").scrollHeight;
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

// ------------------------------------------------------------------ media

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

function recordLatency(now) {
  const seconds = (now - pendingTurn.speechEnd) / 1000;
  latencies.push(seconds);
  $("latency").textContent = `${seconds.toFixed(2)} s (last turn; ${latencies.length} measured)`;
  $("latency").dataset.seconds = seconds.toFixed(3);
  const turn = document.querySelector(`.turn.user[data-inference="${pendingTurn.inferenceId}"]`);
  if (turn) {
    const note = document.createElement("span");
    note.className = "latency";
    note.textContent = `reply after ${seconds.toFixed(2)} s`;
    turn.append(note);
  }
  pendingTurn = null;
}

// ------------------------------------------------------------------ conversation view

function turnElement(role, inferenceId) {
  const key = `${role}:${inferenceId || "none"}`;
  let el = document.querySelector(`.turn[data-key="${CSS.escape(key)}"]`);
  if (!el) {
    el = document.createElement("div");
    el.className = `turn ${role}`;
    el.dataset.key = key;
    el.dataset.inference = inferenceId || "";
    el.innerHTML = `<span class="who"></span><span class="text"></span>`;
    el.querySelector(".who").textContent = role === "user" ? "You" : "Persona";
    $("conversation").append(el);
  }
  return el;
}

// With enable_closed_captions the bot sends conversation.closed_caption events and the
// caption bar follows them; otherwise it follows the streaming utterances.
let closedCaptions = false;

function setCaption(role, text) {
  $("caption").innerHTML = `<span class="who"></span><span></span>`;
  $("caption").firstChild.textContent = role === "user" ? "You:" : "Persona:";
  $("caption").lastChild.textContent = text;
}

function showSpeech(role, inferenceId, speech, { final = false, interrupted = false } = {}) {
  if (!speech) return;
  const el = turnElement(role, inferenceId);
  el.querySelector(".text").textContent = speech + (interrupted ? " (interrupted)" : "");
  el.classList.toggle("streaming", !final);
  $("conversation").scrollTop = $("conversation").scrollHeight;
  if (!closedCaptions) setCaption(role, speech);
}

function onEvent(message) {
  const p = message.properties || {};
  switch (message.event_type) {
    case "conversation.closed_caption":
      closedCaptions = true;
      setCaption(p.role, p.text);
      break;
    case "conversation.utterance.streaming":
      showSpeech(p.role, message.inference_id, p.speech,
                 { final: p.final && p.role === "user", interrupted: p.is_interrupted });
      break;
    case "conversation.utterance":
      if (p.role === "user") showSpeech("user", message.inference_id, p.speech, { final: true });
      else if (!turnElement("replica", message.inference_id).querySelector(".text").textContent) {
        showSpeech("replica", message.inference_id, p.speech, { final: true });
      }
      break;
    case "conversation.user.stopped_speaking":
      if (lastMicSpeech) pendingTurn = { speechEnd: lastMicSpeech, inferenceId: message.inference_id };
      break;
    case "conversation.replica.stopped_speaking": {
      const el = turnElement("replica", message.inference_id);
      el.classList.remove("streaming");
      break;
    }
  }
}

// ------------------------------------------------------------------ events and console

function showEvent(data) {
  let message;
  try { message = JSON.parse(data); } catch { return; }
  window.eventLog.push({ t: micOpenedAt === null ? null : performance.now() - micOpenedAt, message });
  if (!message.event_type) return; // RTVI traffic shares the channel
  conversationId = message.conversation_id || conversationId;
  onEvent(message);
  const row = document.createElement("div");
  row.dataset.type = message.event_type;
  row.textContent = JSON.stringify(message);
  row.hidden = !matchesFilter(row);
  $("events").prepend(row);
}

function matchesFilter(row) {
  const filter = $("filter").value.trim();
  return !filter || row.textContent.includes(filter);
}

function sendInteraction() {
  const eventType = $("event-type").value;
  // Pipecat's SmallWebRTC transport drops data-channel JSON without a "type" key.
  const message = { type: "tavus", message_type: "conversation", event_type: eventType };
  if (conversationId) message.conversation_id = conversationId;
  const raw = $("properties").value.trim();
  if (raw) {
    try { message.properties = JSON.parse(raw); } catch (err) {
      log(`properties are not JSON: ${err.message}`);
      return;
    }
  }
  channel.send(JSON.stringify(message));
  log(`sent ${eventType}`);
}

function fillTemplate() {
  const template = TEMPLATES[$("event-type").value];
  $("properties").value = template ? JSON.stringify(template, null, 2) : "";
}

// ------------------------------------------------------------------ connection

async function connect() {
  $("connect").disabled = true;
  setStatus("Connecting");
  try {
    const withCamera = $("camera").checked;
    mic = await navigator.mediaDevices.getUserMedia({ audio: AUDIO_CONSTRAINTS, video: withCamera });
    micOpenedAt = performance.now();
    window.micOpenedAtMs = micOpenedAt;
    window.micSettings = mic.getAudioTracks()[0].getSettings();
    watchMicrophone(mic);
    pc = new RTCPeerConnection({ iceServers: [] });
    channel = pc.createDataChannel("chat");
    channel.onopen = () => { $("send").disabled = false; };
    channel.onmessage = (event) => showEvent(event.data);
    pc.addTransceiver(mic.getAudioTracks()[0], { direction: "sendrecv" });
    if (withCamera) pc.addTransceiver(mic.getVideoTracks()[0], { direction: "sendrecv" });
    else pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (event) => {
      if (event.track.kind === "audio") {
        $("bot-audio").srcObject = new MediaStream([event.track]);
      } else {
        $("bot-video").srcObject = new MediaStream([event.track]);
        event.track.onunmute = () => { $("bot-video").style.display = "block"; };
      }
    };
    pc.onconnectionstatechange = () => {
      log(`connection: ${pc.connectionState}`);
      if (pc.connectionState === "connected") setStatus("Connected");
      if (["failed", "closed", "disconnected"].includes(pc.connectionState)) disconnect();
    };
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc);
    const response = await fetch("/api/offer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
    });
    if (!response.ok) throw new Error(`offer rejected: HTTP ${response.status}`);
    const answer = await response.json();
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    watchBotAudio();
    $("disconnect").disabled = false;
    $("mute").disabled = false;
    log("offer answered; waiting for media");
  } catch (err) {
    log(`error: ${err.message || err}`);
    disconnect();
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
  pc = null;
  mic = null;
  pendingTurn = null;
  lastBotEnergy = 0;
  botSounding = false;
  $("connect").disabled = false;
  $("disconnect").disabled = true;
  $("mute").disabled = true;
  $("mute").textContent = "Mute";
  setStatus("Disconnected");
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
$("filter").oninput = () => {
  for (const row of $("events").children) row.hidden = !matchesFilter(row);
};
fillTemplate();
