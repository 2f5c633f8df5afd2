// Plain WebRTC client for the Pipecat runner's SmallWebRTC transport.
// No libraries and no network requests beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
let pc = null;
let mic = null;
let channel = null;
let conversationId = null;

// Property templates for the console, one per interaction (wire-formats section 2).
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

async function connect() {
  $("connect").disabled = true;
  setStatus("Connecting");
  try {
    mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    pc = new RTCPeerConnection({ iceServers: [] });
    channel = pc.createDataChannel("chat");
    channel.onopen = () => { $("send").disabled = false; };
    channel.onmessage = (event) => showEvent(event.data);
    pc.addTransceiver(mic.getAudioTracks()[0], { direction: "sendrecv" });
    pc.addTransceiver("video", { direction: "recvonly" });
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
    $("disconnect").disabled = false;
    $("mute").disabled = false;
    log("offer answered; waiting for media");
  } catch (err) {
    log(`error: ${err.message || err}`);
    disconnect();
  }
}

function showEvent(data) {
  let message;
  try { message = JSON.parse(data); } catch { return; }
  if (!message.event_type) return; // RTVI traffic shares the channel
  conversationId = message.conversation_id || conversationId;
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

function disconnect() {
  if (channel) channel.close();
  channel = null;
  $("send").disabled = true;
  if (pc) pc.close();
  if (mic) mic.getTracks().forEach((t) => t.stop());
  pc = null;
  mic = null;
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
