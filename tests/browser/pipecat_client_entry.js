// Pipecat's own web client SDK (@pipecat-ai/client-js + @pipecat-ai/small-webrtc-transport) as a
// Pipecat front end uses it, bundled by esbuild at test time (pipecat_client_check.js) into one
// browser file. It exposes window.runPipecatClient(flow), which connects to the page's origin
// (the bot) and records what the SDK reports into window.pipecatLog.
//   flow "start": startBotAndConnect({endpoint: "/start"}) -> POST /start, then
//                 POST/PATCH /sessions/{id}/api/offer (the runner's Pipecat Cloud-style proxy)
//   flow "offer": connect({webrtcRequestParams: {endpoint: "/api/offer"}}) -> POST/PATCH /api/offer
// (the SDK also POSTs the offer again when the bot asks to renegotiate).
import { PipecatClient, RTVIEvent } from "@pipecat-ai/client-js";
import { SmallWebRTCTransport, WavMediaManager } from "@pipecat-ai/small-webrtc-transport";

const now = () => Math.round(performance.now());
window.pipecatLog = [];
window.audioLog = [];

const record = (event, data) => {
  let copy = null;
  try {
    copy = data === undefined ? null : JSON.parse(JSON.stringify(data));
  } catch {
    copy = String(data);
  }
  window.pipecatLog.push({ t: now(), event, data: copy });
};

// The SDK's RTVI events worth asserting on (each recorded with its data).
const EVENTS = [
  RTVIEvent.TransportStateChanged, RTVIEvent.Connected, RTVIEvent.Disconnected,
  RTVIEvent.BotConnected, RTVIEvent.BotReady, RTVIEvent.BotStarted, RTVIEvent.Error,
  RTVIEvent.UserStartedSpeaking, RTVIEvent.UserStoppedSpeaking, RTVIEvent.UserTranscript,
  RTVIEvent.BotStartedSpeaking, RTVIEvent.BotStoppedSpeaking, RTVIEvent.BotOutput,
  RTVIEvent.BotTranscript, RTVIEvent.BotLlmStarted, RTVIEvent.BotLlmStopped,
  RTVIEvent.BotTtsStarted, RTVIEvent.BotTtsStopped,
];

// The bot's inbound audio as WebRTC reports it (Playwright mutes the speakers).
async function inboundAudio(pc) {
  let audio = null;
  if (!pc) return audio;
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "audio") {
      audio = { energy: r.totalAudioEnergy || 0, level: r.audioLevel || 0, packets: r.packetsReceived || 0 };
    }
  });
  return audio;
}

// `token`: the bot's ACCESS_TOKEN, sent as an app would: a bearer on /start (the SDK sends the
// same headers with the session's offers and ICE candidates), X-Access-Token on /api/offer.
window.runPipecatClient = async (flow, token) => {
  const transport = new SmallWebRTCTransport({ mediaManager: new WavMediaManager() });
  const client = new PipecatClient({ transport, enableMic: true, enableCam: false });
  for (const name of EVENTS) client.on(name, (data) => record(name, data));
  // What an app does with the bot's track: play it (here into a muted page).
  client.on(RTVIEvent.TrackStarted, (track, participant) => {
    record(RTVIEvent.TrackStarted, { kind: track.kind, local: !!(participant && participant.local) });
    if (track.kind === "audio" && !(participant && participant.local)) {
      const el = document.createElement("audio");
      el.autoplay = true;
      el.srcObject = new MediaStream([track]);
      document.body.appendChild(el);
    }
  });
  const poll = setInterval(async () => {
    const audio = await inboundAudio(transport.pc).catch(() => null);
    if (audio) window.audioLog.push({ t: now(), ...audio });
  }, 200);
  window.pipecatClient = client;
  window.pipecatStop = async () => {
    clearInterval(poll);
    await client.disconnect();
  };
  record("connect-called", { flow });
  try {
    if (flow === "start") {
      const headers = new Headers(token ? { Authorization: `Bearer ${token}` } : {});
      await client.startBotAndConnect({ endpoint: "/start", headers, requestData: { transport: "webrtc" } });
    } else {
      const headers = new Headers(token ? { "X-Access-Token": token } : {});
      await client.connect({ webrtcRequestParams: { endpoint: "/api/offer", headers } });
    }
    const mic = transport.tracks().local.audio;
    const settings = mic ? mic.getSettings() : {};
    record("connect-resolved", { flow, mic: mic ? { echoCancellation: settings.echoCancellation,
      noiseSuppression: settings.noiseSuppression, autoGainControl: settings.autoGainControl } : null });
  } catch (err) {
    record("connect-failed", { flow, message: String(err && err.message ? err.message : err),
      status: err && err.status });
    throw err;
  }
};
